//! Reading keys named on the command line: a file path, or `env://VAR` (the PEM text in an
//! environment variable, for CI secrets), with the password from `COSIGN_PASSWORD` or a prompt.

use std::io::IsTerminal as _;

use anyhow::{Context as _, bail};
use bpfship_verifier::keys::{PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// The bytes a key argument names.
fn key_bytes(arg: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if let Some(var) = arg.strip_prefix("env://") {
        let v = std::env::var(var)
            .with_context(|| format!("{arg}: environment variable {var} is not set"))?;
        return Ok(Zeroizing::new(v.into_bytes()));
    }
    crate::input_file::read_all(std::path::Path::new(arg))
        .map(Zeroizing::new)
        .with_context(|| format!("cannot read key {arg}"))
}

/// The password for encrypting or decrypting a private key.
pub fn password(confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var("COSIGN_PASSWORD") {
        return Ok(Zeroizing::new(p));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: set COSIGN_PASSWORD (stdin is not a terminal to prompt on)");
    }
    let p = Zeroizing::new(rpassword::prompt_password(
        "Enter password for private key: ",
    )?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password(
            "Enter password for private key again: ",
        )?);
        if *again != *p {
            bail!("passwords do not match");
        }
    }
    Ok(p)
}

/// Loads and decrypts a private key argument.
pub fn private_key(arg: &str) -> anyhow::Result<PrivateKey> {
    let pem = key_bytes(arg)?;
    let pw = password(false)?;
    PrivateKey::from_encrypted_pem(&pem, pw.as_bytes())
        .with_context(|| format!("private key {arg}"))
}

/// Loads a public key argument (a `PUBLIC KEY` PEM).
pub fn public_key(arg: &str) -> anyhow::Result<PublicKey> {
    let pem = key_bytes(arg)?;
    PublicKey::from_pem(&pem).with_context(|| format!("public key {arg}"))
}
