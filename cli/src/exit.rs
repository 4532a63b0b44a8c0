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
        let (code, err, kind) = match inner {
            Failure::Rejected(e) => (1, e, "rejected"),
            Failure::Error(e) => (2, e, "error"),
            Failure::Reported(inner) => return inner.report(out),
        };
        let message = format!("{err:#}");
        if out == OutputFormat::Json && !printed {
            let v = serde_json::json!({ "ok": false, "kind": kind, "error": message });
            println!("{v}");
        }
        eprintln!("bpfship: {message}");
        ExitCode::from(code)
    }
}

/// Shorthand for command results.
pub type CmdResult = Result<(), Failure>;
