//! The agent's speed figures, measured side by side in one run (root; run by bench/agent.sh):
//! dispatcher cost versus direct attach (BPF_PROG_TEST_RUN), rollback latency, new digest →
//! canary attached for a ~100 KB object, and the idle footprint of the agent binary with three
//! deployments.
//!
//! Usage: agent_bench OBJECTS_DIR AGENT_BINARY [IDLE_SECONDS]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bpfship_agent::control::{Request, RequestKind, request};
use bpfship_agent::deployment::DeploymentStatus;
use bpfship_agent::kernel::{self, Dispatcher, HookKind, ProgramFd, SplitMode};
use bpfship_registry::testing::TestRegistry;
use bpfship_registry::{Client, ClientOptions, Reference};
use bpfship_trust::sign::{SignatureFormat, sign_descriptor};
use bpfship_verifier::keys::PrivateKey;

#[path = "common/frame.rs"]
mod frame;
use frame::frame;

/// Best of 5 runs of `repeat` test runs: ns per run.
fn ns_per_run(prog: &ProgramFd, repeat: u32) -> f64 {
    (0..5)
        .map(|_| {
            f64::from(
                prog.test_run(&frame(), repeat)
                    .expect("test run")
                    .duration_ns,
            )
        })
        .fold(f64::INFINITY, f64::min)
}

/// A veth pair `name` / `name`p, both up (XDP in generic mode works on it everywhere).
fn add_veth(name: &str) -> bool {
    let _ = Command::new("ip").args(["link", "del", name]).output();
    let peer = format!("{name}p");
    let run = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    run(&["link", "add", name, "type", "veth", "peer", "name", &peer])
        && run(&["link", "set", name, "up"])
        && run(&["link", "set", &peer, "up"])
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (objects, agent_bin) = match (args.get(1), args.get(2)) {
        (Some(o), Some(a)) => (PathBuf::from(o), PathBuf::from(a)),
        _ => {
            eprintln!("usage: agent_bench OBJECTS_DIR AGENT_BINARY [IDLE_SECONDS]");
            std::process::exit(2);
        }
    };
    let idle_seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(60);
    if let Err(e) = kernel::bpf_available() {
        eprintln!("agent_bench: needs root and BPF: {e}");
        std::process::exit(2);
    }
    let read = |n: &str| std::fs::read(objects.join(format!("{n}.o"))).expect("built object");
    let pins = PathBuf::from(format!("/sys/fs/bpf/bpfship-bench-{}", std::process::id()));
    std::fs::create_dir_all(&pins).unwrap();

    // 1. Dispatcher cost.
    let v1 = kernel::load_program(&read("v1"), "filter", HookKind::Xdp, &pins.join("m1")).unwrap();
    let v2 = kernel::load_program(&read("v2"), "filter", HookKind::Xdp, &pins.join("m2")).unwrap();
    let repeat = 1_000_000;
    let direct = ns_per_run(&v1.fd, repeat);
    let mut rows = Vec::new();
    for (label, mode, share) in [
        ("dispatcher, 0% canary", SplitMode::Random, 0),
        ("dispatcher, 10% random", SplitMode::Random, 1000),
        ("dispatcher, 10% flow hash", SplitMode::FlowHash, 1000),
    ] {
        let d = Dispatcher::create(HookKind::Xdp, mode, 7).unwrap();
        d.set_slot(0, &v1.fd).unwrap();
        d.set_slot(1, &v2.fd).unwrap();
        d.set_canary_share(share).unwrap();
        let via = ns_per_run(&d.prog, repeat);
        rows.push((label, via, via - direct));
    }
    println!("## dispatcher cost (BPF_PROG_TEST_RUN, repeat {repeat}, best of 5)");
    println!("| path | ns/packet | added vs direct |");
    println!("|---|---|---|");
    println!("| program attached directly | {direct:.1} | — |");
    for (label, via, added) in &rows {
        println!("| {label} | {via:.1} | {added:+.1} |");
    }

    // 2. Rollback latency: the decision's kernel operations, timed 1000 times each.
    let d = Dispatcher::create(HookKind::Xdp, SplitMode::FlowHash, 7).unwrap();
    d.set_slot(0, &v1.fd).unwrap();
    d.set_slot(1, &v2.fd).unwrap();
    let dummy = "bsbench0";
    let _ = Command::new("ip").args(["link", "del", dummy]).output();
    let ok = add_veth(dummy);
    let mut share_ns = Vec::new();
    let mut link_ns = Vec::new();
    if ok {
        let hook = kernel::Hook::Xdp {
            interface: dummy.into(),
            mode: kernel::XdpMode::Generic,
        };
        let link = kernel::attach(&hook, &d.prog).unwrap();
        for _ in 0..1000 {
            d.set_canary_share(1000).unwrap();
            let t = Instant::now();
            d.set_canary_share(0).unwrap();
            share_ns.push(t.elapsed().as_nanos() as f64);
            let t = Instant::now();
            link.replace(&v1.fd, &d.prog).unwrap();
            link_ns.push(t.elapsed().as_nanos() as f64);
            link.replace(&d.prog, &v1.fd).unwrap();
        }
        drop(link);
        let _ = Command::new("ip").args(["link", "del", dummy]).output();
        println!("\n## rollback latency (decision → stable serving all traffic), 1000 rollbacks");
        println!("| operation | median µs | p99 µs |");
        println!("|---|---|---|");
        println!(
            "| canary share → 0 (one map update: stable takes every packet) | {:.1} | {:.1} |",
            percentile(&mut share_ns, 0.5) / 1e3,
            percentile(&mut share_ns, 0.99) / 1e3
        );
        println!(
            "| hook → stable program (one link update: dispatcher out of the path) | {:.1} | {:.1} |",
            percentile(&mut link_ns, 0.5) / 1e3,
            percentile(&mut link_ns, 0.99) / 1e3
        );
    }
    drop(d);
    drop((v1, v2));

    // 3. New signed digest → canary attached, ~100 KB object, loopback registry.
    let registry = TestRegistry::start().expect("docker-registry");
    let host = registry.url().split("://").nth(1).unwrap().to_string();
    let client = Client::new(ClientOptions::default()).unwrap();
    let key = PrivateKey::generate();
    let publish = |object: &str| {
        let bytes = read(object);
        let inspection = bpfship_trust::content::inspect(&bytes, None).unwrap();
        let target = Reference::parse(&format!("{host}/bench/big:stable")).unwrap();
        let p = bpfship_trust::publish::push(
            &client,
            &target,
            "stable",
            "big.o",
            &bytes,
            &inspection,
            None,
            None,
        )
        .unwrap();
        sign_descriptor(&client, &target, &p.descriptor, &key, SignatureFormat::Both).unwrap();
        (p.descriptor.digest, bytes.len())
    };
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "version = 1\n[[trust]]\nrepositories = [\"127.0.0.1:*/**\"]\nkeys = [\"\"\"\n{}\"\"\"]\n",
        key.public_key().to_pem()
    );
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let ifaces = ["bsbench1", "bsbench2", "bsbench3"];
    for i in ifaces {
        assert!(add_veth(i), "cannot create a veth pair {i}");
    }
    let deployment = |name: &str, iface: &str, poll: f64| {
        format!(
            "[[deployment]]\nname = \"{name}\"\nartifact = \"{host}/bench/big:stable\"\nprogram = \"filter\"\n\
             hook = {{ type = \"xdp\", interface = \"{iface}\", mode = \"generic\" }}\n\
             [deployment.rollout]\nsteps = [{{ percent = 10, bake_seconds = {poll} }}]\n"
        )
    };
    // Writes `<name>.toml` and starts the agent on it.
    let start_agent = |name: &str, poll: f64, deployments: &str| -> std::process::Child {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "host_id = \"bench\"\nstate_dir = \"{name}-state\"\npin_root = \"{}/{name}\"\ncontrol_socket = \"{}/{name}.sock\"\n\
                 metrics_address = \"\"\npolicy = \"policy.toml\"\npoll_interval_seconds = {poll}\n{deployments}",
                pins.display(),
                dir.path().display()
            ),
        )
        .unwrap();
        Command::new(&agent_bin)
            .arg("--config")
            .arg(&p)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (d1, size) = publish("big1");
    let mut agent = start_agent("latency", 0.1, &deployment("big", ifaces[0], 600.0));
    let socket = dir.path().join("latency.sock");
    let status = || {
        request(
            &socket,
            &Request {
                command: RequestKind::Status,
                deployment: None,
                digest: None,
            },
        )
        .ok()
        .and_then(|r| r.deployments.into_iter().next())
    };
    let wait = |pred: &dyn Fn(&DeploymentStatus) -> bool| -> Option<DeploymentStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(s) = status()
                && pred(&s)
            {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    };
    wait(&|s| s.stable.as_ref() == Some(&d1)).expect("big1 installed");
    let (d2, _) = publish("big2");
    let s = wait(&|s| s.canary.as_ref() == Some(&d2)).expect("big2 canary");
    let _ = agent.kill();
    let _ = agent.wait();
    println!(
        "\n## new signed digest → canary attached ({} KB object, loopback registry)",
        size / 1024
    );
    println!("| from the new digest seen to the canary attached | ms |");
    println!("|---|---|");
    println!(
        "| verify (both layouts) + fetch + validate + store + kernel load + dispatcher attach | {:.1} |",
        s.last_canary_start_ms.unwrap_or(f64::NAN)
    );

    // 4. Idle footprint with three deployments (each polling every 30 s).
    let three: String = ifaces
        .iter()
        .enumerate()
        .map(|(i, f)| deployment(&format!("idle{i}"), f, 60.0))
        .collect();
    let mut agent = start_agent("idle", 30.0, &three);
    let pid = agent.id();
    std::thread::sleep(Duration::from_secs(3));
    let ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
    };
    let rss_kb = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let t0 = ticks(pid);
    std::thread::sleep(Duration::from_secs(idle_seconds));
    let cpu_s = (ticks(pid) - t0) as f64 / 100.0;
    let rss = rss_kb(pid);
    let _ = agent.kill();
    let _ = agent.wait();
    println!("\n## agent idle footprint, 3 deployments, {idle_seconds} s");
    println!("| RSS | CPU per minute |");
    println!("|---|---|");
    println!(
        "| {:.1} MB | {:.2} s ({:.3}% of one core) |",
        rss as f64 / 1024.0,
        cpu_s * 60.0 / idle_seconds as f64,
        cpu_s / idle_seconds as f64 * 100.0
    );

    for i in ifaces {
        let _ = Command::new("ip").args(["link", "del", i]).output();
    }
    for e in std::fs::read_dir(&pins).into_iter().flatten().flatten() {
        for d in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
            bpfship_agent::hook::HookRuntime::remove_all(&d.path());
        }
    }
    let _ = std::fs::remove_dir_all(Path::new(&pins));
}
