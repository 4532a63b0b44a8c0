//! `bpfship agent status|promote|abort|pause|resume|pin|unpin [DEPLOYMENT]`: talks to a running
//! `bpfship-agent` over its root-only control socket.

use std::path::PathBuf;

use bpfship_control::{Command, DeploymentStatus, Request, RequestKind, request};

use crate::exit::{CmdResult, Failure};
use crate::output::{OutputFormat, print_json};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// The agent's control socket.
    #[arg(long, global = true, default_value = "/run/bpfship/agent.sock")]
    socket: PathBuf,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Phase, versions, canary share, analysis and last verification of each deployment.
    Status { deployment: Option<String> },
    /// Promote the running canary now (skipping its remaining steps).
    Promote { deployment: String },
    /// Roll the canary back; after a promotion, within the rollback window, restore the
    /// previous version.
    Abort { deployment: String },
    /// Hold the canary at its current step.
    Pause { deployment: String },
    /// Continue a paused canary (its step's bake starts again).
    Resume { deployment: String },
    /// Take DIGEST instead of the tag's digest — also one promoted before (a deliberate
    /// downgrade, which the agent otherwise refuses) or refused before. Verified, canaried and
    /// promoted as usual; kept across restarts until `unpin`.
    Pin { deployment: String, digest: String },
    /// Follow the tag again.
    Unpin { deployment: String },
}

pub fn run(args: Args, out: OutputFormat) -> CmdResult {
    let (command, deployment, digest) = match args.action {
        Action::Status { deployment } => (RequestKind::Status, deployment, None),
        Action::Promote { deployment } => (Command::Promote.into(), Some(deployment), None),
        Action::Abort { deployment } => (Command::Abort.into(), Some(deployment), None),
        Action::Pause { deployment } => (Command::Pause.into(), Some(deployment), None),
        Action::Resume { deployment } => (Command::Resume.into(), Some(deployment), None),
        Action::Pin { deployment, digest } => (Command::Pin.into(), Some(deployment), Some(digest)),
        Action::Unpin { deployment } => (Command::Unpin.into(), Some(deployment), None),
    };
    let response = request(
        &args.socket,
        &Request {
            command,
            deployment,
            digest,
        },
    )
    .map_err(|e| Failure::Error(e.into()))?;
    if !response.ok {
        return Err(Failure::Rejected(anyhow::anyhow!(
            "{}",
            response
                .error
                .unwrap_or_else(|| "the agent refused the request".into())
        )));
    }
    match out {
        OutputFormat::Json => {
            print_json(&serde_json::json!({ "deployments": response.deployments }))?
        }
        _ => {
            for d in &response.deployments {
                print_status(d)?;
            }
        }
    }
    Ok(())
}

fn print_status(d: &DeploymentStatus) -> std::io::Result<()> {
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    outln!("{} ({})", d.name, d.hook)?;
    outln!("  artifact:  {}", d.artifact)?;
    outln!("  phase:     {}", d.phase.as_str())?;
    outln!("  stable:    {}", or_dash(&d.stable))?;
    if let Some(canary) = &d.canary {
        outln!(
            "  canary:    {canary} at {}% (step {} of {}, split {})",
            d.canary_percent,
            d.step.map_or(0, |x| x + 1),
            d.steps,
            d.split
        )?;
    }
    if let Some(pinned) = &d.pinned {
        outln!("  pinned:    {pinned} (the tag is not followed)")?;
    }
    if let Some(previous) = &d.previous {
        outln!("  previous:  {previous} (kept for rollback)")?;
    }
    for v in &d.versions {
        outln!("  verdicts:  {} {}", v.role, v.verdict_counting)?;
        if !v.verdicts.is_empty() {
            let counts: Vec<String> = v.verdicts.iter().map(|(k, n)| format!("{k} {n}")).collect();
            outln!("             {}", counts.join(", "))?;
        }
    }
    outln!("  registry:  {}", d.registry)?;
    if let Some(v) = &d.last_verification {
        outln!(
            "  verified:  {} {} — {}",
            v.digest,
            if v.ok { "ok" } else { "REFUSED" },
            v.detail
        )?;
    }
    for a in &d.awaiting_signature {
        outln!(
            "  awaiting:  {} — not verified yet ({} checks, next in {:.0}s): {}",
            a.digest,
            a.attempts,
            a.retry_in_seconds,
            a.reason
        )?;
    }
    for r in &d.rejected {
        outln!("  rejected:  {} — {}", r.digest, r.reason)?;
    }
    if let Some(log) = &d.verifier_log {
        outln!("  verifier log (tail):")?;
        for l in log.lines() {
            outln!("    {l}")?;
        }
    }
    outln!("  message:   {}", d.message)?;
    Ok(())
}
