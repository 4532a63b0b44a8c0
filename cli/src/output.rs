//! Output formats shared by every command, and the macros that print to stdout: unlike
//! `println!`, they return the write error (a reader that closed the pipe ends the command quietly
//! with exit 0, see `exit::is_broken_pipe`) instead of panicking.

use serde::Serialize;

/// `--output`: text for people, json for machines, sarif for code-scanning uploads (`validate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Sarif,
}

/// Prints `value` as one JSON document on stdout, buffered: stdout is line-buffered, and a
/// pretty-printed report of a big module (hundreds of thousands of lines) would otherwise cost a
/// write system call per line.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}

/// `print!` to stdout returning `io::Result<()>`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `println!` to stdout returning `io::Result<()>`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}
