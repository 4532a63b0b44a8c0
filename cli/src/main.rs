//! `bpfship`: validate, sign, push and verify eBPF and WASM artifacts. A thin front end: the
//! logic lives in `bpfship-verifier` (no network, no kernel), `bpfship-registry` (OCI transport)
//! and `bpfship-agent` (kernel side).
//!
//! Exit codes: 0 valid/verified, 1 invalid, refused by policy or failed verification, 2 usage or
//! I/O error.

#[macro_use]
mod output;
mod commands;
mod exit;
mod input_file;
mod keyless;
mod keys;
mod registry_args;
mod render;
mod sarif;

use clap::{Parser, Subcommand};

use crate::exit::Failure;
use crate::output::OutputFormat;

#[derive(Parser)]
#[command(name = "bpfship", version, about, long_about = None)]
struct Cli {
    /// How to print results: text for people, json for machines (sarif for `validate`).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// More logging on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate eBPF ELF objects and WASM modules (optionally against a policy and the kernel).
    Validate(commands::validate::Args),
    /// Inspect a local file or an artifact in a registry: findings, OCI metadata, signatures.
    Inspect(commands::inspect::Args),
    /// Write an encrypted cosign-compatible key pair (cosign.key, cosign.pub).
    GenerateKeyPair(commands::keys::GenerateArgs),
    /// Print the public key of a private key.
    PublicKey(commands::keys::PublicKeyArgs),
    /// Sign a file; prints the base64 signature (cosign sign-blob compatible).
    SignBlob(commands::blob::SignArgs),
    /// Verify a file's signature or bundle (cosign verify-blob compatible).
    VerifyBlob(commands::blob::VerifyArgs),
    /// Validate, package and push an eBPF object or WASM module; sign it with --key.
    Push(commands::push::Args),
    /// Sign an artifact already in a registry (by digest; a tag is resolved once).
    Sign(commands::sign::Args),
    /// Verify an artifact's signatures (both layouts) and the policy.
    Verify(commands::verify::Args),
    /// Verify, then fetch an artifact by digest and write its ELF/WASM to a directory.
    Pull(commands::pull::Args),
    /// Ask the local bpfship-agent: status, promote, abort, pause, resume.
    Agent(commands::agent::Args),
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(cli.verbose);
    let out = cli.output;
    let result = match cli.command {
        Command::Validate(a) => commands::validate::run(a, out),
        Command::Inspect(a) => commands::inspect::run(a, out),
        Command::GenerateKeyPair(a) => commands::keys::generate(a, out),
        Command::PublicKey(a) => commands::keys::public_key(a, out),
        Command::SignBlob(a) => commands::blob::sign(a, out),
        Command::VerifyBlob(a) => commands::blob::verify(a, out),
        Command::Push(a) => commands::push::run(a, out),
        Command::Sign(a) => commands::sign::run(a, out),
        Command::Verify(a) => commands::verify::run(a, out),
        Command::Pull(a) => commands::pull::run(a, out),
        Command::Agent(a) => commands::agent::run(a, out),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => failure.report(out),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Used by the command modules: a failure that exits 1 (invalid / refused / not verified).
pub(crate) fn rejected(err: impl Into<anyhow::Error>) -> Failure {
    Failure::Rejected(err.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
