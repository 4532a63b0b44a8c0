//! `bpfship agent status|promote|abort|pause|resume [DEPLOYMENT]`: talks to a running
//! `bpfship-agent` over its root-only control socket.

use std::path::PathBuf;

use bpfship_agent::control::{Request, request};

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
}

pub fn run(args: Args, out: OutputFormat) -> CmdResult {
    let (command, deployment) = match args.action {
        Action::Status { deployment } => ("status", deployment),
        Action::Promote { deployment } => ("promote", Some(deployment)),
        Action::Abort { deployment } => ("abort", Some(deployment)),
        Action::Pause { deployment } => ("pause", Some(deployment)),
        Action::Resume { deployment } => ("resume", Some(deployment)),
    };
    let response = request(
        &args.socket,
        &Request {
            command: command.into(),
            deployment,
        },
    )
    .map_err(|e| Failure::Error(anyhow::anyhow!(e)))?;
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
                let s = |k: &str| d[k].as_str().unwrap_or("-").to_string();
                outln!("{} ({})", s("name"), s("hook"))?;
                outln!("  artifact:  {}", s("artifact"))?;
                outln!("  phase:     {}", s("phase"))?;
                outln!("  stable:    {}", s("stable"))?;
                if !d["canary"].is_null() {
                    outln!(
                        "  canary:    {} at {}% (step {} of {}, split {})",
                        s("canary"),
                        d["canary_percent"],
                        d["step"].as_u64().map_or(0, |x| x + 1),
                        d["steps"],
                        s("split")
                    )?;
                }
                if !d["previous"].is_null() {
                    outln!("  previous:  {} (kept for rollback)", s("previous"))?;
                }
                outln!("  registry:  {}", s("registry"))?;
                if let Some(v) = d["last_verification"].as_object() {
                    outln!(
                        "  verified:  {} {} — {}",
                        v["digest"].as_str().unwrap_or("-"),
                        if v["ok"] == true { "ok" } else { "REFUSED" },
                        v["detail"].as_str().unwrap_or("")
                    )?;
                }
                for r in d["rejected"].as_array().into_iter().flatten() {
                    outln!(
                        "  rejected:  {} — {}",
                        r["digest"].as_str().unwrap_or("-"),
                        r["reason"].as_str().unwrap_or("")
                    )?;
                }
                if let Some(log) = d["verifier_log"].as_str() {
                    outln!("  verifier log (tail):")?;
                    for l in log.lines() {
                        outln!("    {l}")?;
                    }
                }
                outln!("  message:   {}", s("message"))?;
            }
        }
    }
    Ok(())
}
