//! bpfman's spellings of program and map types, for a bytecode image's `io.ebpf.programs` and
//! `io.ebpf.maps` labels: what bpfman's loaders (Rust and Go) and its image builder write and
//! read. The validator's reports keep the kernel's names (`sched_cls`, `percpu_array`).

/// bpfman's program type for a program in `section` (`xdp`, `tc`, `tcx`, `tracepoint`, `kprobe`,
/// `kretprobe`, `uprobe`, `uretprobe`, `fentry`, `fexit`, …): return probes and tcx keep their
/// own names, as bpfman attaches them differently.
pub fn program_type(section: &str) -> String {
    let stem = section.split('/').next().unwrap_or("");
    let stem = stem.split('.').next().unwrap_or(stem);
    match stem {
        "classifier" | "tc" => "tc",
        "tcx" => "tcx",
        "tp" | "tracepoint" => "tracepoint",
        "socket" => "socket_filter",
        "kprobe" | "ksyscall" => "kprobe",
        "kretprobe" | "kretsyscall" => "kretprobe",
        "uprobe" | "usdt" => "uprobe",
        "uretprobe" => "uretprobe",
        other => other,
    }
    .to_owned()
}

/// bpfman's spelling of a kernel map type name: `per_cpu` where the kernel writes `percpu`
/// (`per_cpu_array`, `lru_per_cpu_hash`, `per_cpu_cgroup_storage`); the others are the same.
pub fn map_type(kernel_name: &str) -> String {
    kernel_name.replace("percpu", "per_cpu")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_types_keep_return_probes_and_tcx_apart() {
        for (section, want) in [
            ("xdp", "xdp"),
            ("xdp.frags", "xdp"),
            ("classifier", "tc"),
            ("tc/ingress", "tc"),
            ("tcx/ingress", "tcx"),
            ("tcx/egress", "tcx"),
            ("tracepoint/syscalls/sys_enter_getpid", "tracepoint"),
            ("tp/sched/sched_switch", "tracepoint"),
            ("kprobe/do_unlinkat", "kprobe"),
            ("kretprobe/do_unlinkat", "kretprobe"),
            ("kretprobe.multi/do_*", "kretprobe"),
            ("ksyscall/openat", "kprobe"),
            ("kretsyscall/openat", "kretprobe"),
            ("uprobe//usr/bin/bash:readline", "uprobe"),
            ("uprobe.s//usr/bin/bash:readline", "uprobe"),
            ("uretprobe//usr/bin/bash:readline", "uretprobe"),
            ("uretprobe.multi.s/x", "uretprobe"),
            ("fentry/do_unlinkat", "fentry"),
            ("fexit/do_unlinkat", "fexit"),
            ("socket", "socket_filter"),
        ] {
            assert_eq!(program_type(section), want, "{section}");
        }
    }

    #[test]
    fn map_types_are_spelled_as_bpfman_spells_them() {
        for (kernel, want) in [
            ("hash", "hash"),
            ("percpu_hash", "per_cpu_hash"),
            ("percpu_array", "per_cpu_array"),
            ("lru_percpu_hash", "lru_per_cpu_hash"),
            ("percpu_cgroup_storage", "per_cpu_cgroup_storage"),
            ("ringbuf", "ringbuf"),
            ("prog_array", "prog_array"),
        ] {
            assert_eq!(map_type(kernel), want, "{kernel}");
        }
    }
}
