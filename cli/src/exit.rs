//! How a command ends: the exit-code contract (0 ok, 1 rejected, 2 usage or I/O error) and the
//! one-line error a user sees.

use std::process::ExitCode;

use crate::output::OutputFormat;

/// A command's failure, carrying its exit code class.
#[derive(Debug)]
pub enum Failure {
    /// The input is invalid, refused by policy, or failed verification: exit 1.
    Rejected(anyhow::Error),
    /// Usage, I/O, network or environment error: exit 2.
    Error(anyhow::Error),
    /// A failure whose machine-readable result (JSON or SARIF) the command already printed on
    /// stdout: only the stderr line is left to print, so stdout stays one document.
    Reported(Box<Failure>),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Error(e.into())
    }
}

impl Failure {
    /// Prints the error (one line with its causes, or a JSON object) and returns the exit code.
    pub fn report(self, out: OutputFormat) -> ExitCode {
        let (inner, printed) = match self {
            Failure::Reported(inner) => (*inner, true),
            other => (other, false),
        };
        if let Failure::Rejected(e) | Failure::Error(e) = &inner
            && is_broken_pipe(e)
        {
            // The reader stopped reading (`bpfship … | head`): nothing more to say, as ripgrep.
            return ExitCode::SUCCESS;
        }
        let (code, err, kind) = match inner {
            Failure::Rejected(e) => (1, e, "rejected"),
            Failure::Error(e) => (2, e, "error"),
            Failure::Reported(inner) => return inner.report(out),
        };
        let message = one_line(&err);
        if out == OutputFormat::Json && !printed {
            let v = serde_json::json!({ "ok": false, "kind": kind, "error": message });
            let _ = outln!("{v}");
        }
        eprintln!("bpfship: {message}");
        ExitCode::from(code)
    }
}

impl Failure {
    /// A registry failure by its class: what the registry served failing its digest or size
    /// (integrity), or refused, is a rejection (1); an outage, a missing artifact or bad
    /// credentials is an error (2).
    pub fn registry(e: bpfship_registry::RegistryError) -> Self {
        use bpfship_registry::ErrorClass;
        match e.class() {
            ErrorClass::Integrity | ErrorClass::Refused => Failure::Rejected(e.into()),
            _ => Failure::Error(e.into()),
        }
    }
}

/// True when `err` comes from writing to a pipe whose reader has gone (EPIPE).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            })
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Shorthand for command results.
pub type CmdResult = Result<(), Failure>;

/// The error and its causes on one line, `outer: cause: cause`, leaving out a cause whose text
/// the line already carries (library errors often include their source in their own message).
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    // Causes carry registry- and file-chosen text: no control character reaches the terminal.
    bpfship_registry::untrusted::escape(&line.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io).context("p.toml: key k.pub: No such file");
        assert_eq!(one_line(&e), "p.toml: key k.pub: No such file");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&e), "outer: inner");
    }
}
