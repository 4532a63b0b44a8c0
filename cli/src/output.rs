//! Output formats shared by every command.

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
