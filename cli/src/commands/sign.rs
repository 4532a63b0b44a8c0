//! `sign --key K REF`: sign an artifact already in a registry, by digest.

use bpfship_trust::sign::{SignOptions, SignatureFormat, sign};

use crate::exit::CmdResult;
use crate::output::{OutputFormat, print_json};
use crate::registry_args::{RegistryArgs, reference};

/// `--signature-format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Legacy,
    Bundle,
    Both,
}

impl From<Format> for SignatureFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Legacy => SignatureFormat::Legacy,
            Format::Bundle => SignatureFormat::Bundle,
            Format::Both => SignatureFormat::Both,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Private key: a file, or env://VAR.
    #[arg(long)]
    key: String,
    /// Signature layouts to write.
    #[arg(long, value_enum, default_value_t = Format::Both)]
    signature_format: Format,
    /// Sign this monotonic release version into both layouts (`dev.bpfship.version`): the agent
    /// refuses to go back to a lower version than one it already ran.
    #[arg(long = "version", value_name = "N")]
    release_version: Option<u64>,
    /// The artifact: registry/repository:tag (resolved once) or @sha256:… .
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: Args, out: OutputFormat) -> CmdResult {
    let target = reference(&args.reference)?;
    let key = crate::keys::private_key(&args.key)?;
    let client = args.registry.client()?;
    let options = SignOptions {
        format: args.signature_format.into(),
        version: args.release_version,
    };
    let signed = sign(&client, &target, &key, options)?;
    match out {
        OutputFormat::Json => print_json(&signed)?,
        _ => outln!("Signed {} with key {}", signed.reference, signed.key_hint)?,
    }
    Ok(())
}
