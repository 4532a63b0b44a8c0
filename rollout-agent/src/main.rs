//! `bpfship-agent --config /etc/bpfship/agent.toml`: runs the deployments in the configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Verified, canaried, self-healing eBPF rollout on this host.
#[derive(Parser)]
#[command(name = "bpfship-agent", version)]
struct Args {
    /// The agent configuration.
    #[arg(long, default_value = "/etc/bpfship/agent.toml")]
    config: PathBuf,
    /// Check the configuration and the policy, then exit (nothing is loaded).
    #[arg(long)]
    check: bool,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let config = match bpfship_agent::config::AgentConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bpfship-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        return match bpfship_agent::agent::context(&config) {
            Ok(_) => {
                println!(
                    "{}: ok ({} deployments)",
                    args.config.display(),
                    config.deployments.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bpfship-agent: {e}");
                ExitCode::from(2)
            }
        };
    }
    match bpfship_agent::agent::Agent::start(&config) {
        Ok(agent) => {
            tracing::info!(deployments = config.deployments.len(), "agent running");
            let ended = agent.wait();
            // Pinned programs keep running; the service manager restarts the agent, which
            // adopts them.
            tracing::error!(%ended, "a deployment loop ended: exiting so the agent is restarted");
            eprintln!("bpfship-agent: {ended}");
            ExitCode::from(70)
        }
        Err(e) => {
            eprintln!("bpfship-agent: {e}");
            ExitCode::from(2)
        }
    }
}
