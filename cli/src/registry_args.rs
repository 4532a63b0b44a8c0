//! Registry access flags shared by the commands that talk to a registry.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bpfship_registry::auth::Credentials;
use bpfship_registry::{Client, ClientOptions, Reference};

/// How to reach the registry.
#[derive(clap::Args, Debug)]
pub struct RegistryArgs {
    /// Reach this registry (host[:port]) over plain HTTP. Loopback addresses need no flag.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Registry user name; the password is read from standard input (--password-stdin).
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the registry password (or token) from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Extra CA certificate (PEM) to trust for the registry's TLS.
    #[arg(long = "registry-cacert", value_name = "FILE")]
    ca_certificates: Vec<PathBuf>,
    /// Seconds one registry request may take, body included (default 600): a registry that
    /// stalls or trickles fails the command after this long.
    #[arg(long = "registry-timeout", value_name = "SECONDS", env = "BPFSHIP_REGISTRY_TIMEOUT",
          value_parser = positive_seconds)]
    timeout: Option<Duration>,
}

/// A positive, finite number of seconds.
fn positive_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

impl RegistryArgs {
    /// A client configured from the flags (credentials otherwise from the docker config).
    pub fn client(&self) -> anyhow::Result<Client> {
        let credentials = match &self.username {
            Some(u) if self.password_stdin => {
                let mut p = String::new();
                // A password is short: a standard input that never ends is not read forever.
                std::io::stdin()
                    .take(64 << 10)
                    .read_to_string(&mut p)
                    .context("reading the password from standard input")?;
                Some(Credentials {
                    username: u.clone(),
                    password: p.trim_end_matches(['\n', '\r']).to_owned(),
                })
            }
            _ => None,
        };
        let ca_certificates = self
            .ca_certificates
            .iter()
            .map(|p| {
                crate::input_file::read_all(p)
                    .with_context(|| format!("cannot read CA certificate {}", p.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Client::new(ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            credentials,
            ca_certificates,
            timeout: self.timeout,
        })?)
    }
}

/// Parses a reference argument.
pub fn reference(arg: &str) -> anyhow::Result<Reference> {
    Ok(Reference::parse(arg)?)
}
