//! libbpf's section-name conventions: which program type (and attach point) a `SEC("…")` name
//! means. Follows libbpf's `section_defs` table.

/// What a section name says about the program in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionDef {
    /// The section name, or its prefix before `/` when the name carries an attach target.
    pub prefix: &'static str,
    /// Kernel program type name (`enum bpf_prog_type` without `BPF_PROG_TYPE_`, lower case).
    pub program_type: &'static str,
    /// Whether the name may (or must) carry an attach target after a `/`.
    pub takes_target: bool,
}

const fn def(prefix: &'static str, program_type: &'static str, takes_target: bool) -> SectionDef {
    SectionDef {
        prefix,
        program_type,
        takes_target,
    }
}

/// libbpf's section definitions, longest prefixes first where they share a stem.
pub const SECTION_DEFS: &[SectionDef] = &[
    def("socket", "socket_filter", false),
    def("sk_reuseport/migrate", "sk_reuseport", false),
    def("sk_reuseport", "sk_reuseport", false),
    def("kprobe.multi", "kprobe", true),
    def("kretprobe.multi", "kprobe", true),
    def("kprobe.session", "kprobe", true),
    def("kprobe", "kprobe", true),
    def("kretprobe", "kprobe", true),
    def("uprobe.multi.s", "kprobe", true),
    def("uretprobe.multi.s", "kprobe", true),
    def("uprobe.multi", "kprobe", true),
    def("uretprobe.multi", "kprobe", true),
    def("uprobe.session.s", "kprobe", true),
    def("uprobe.session", "kprobe", true),
    def("uprobe.s", "kprobe", true),
    def("uretprobe.s", "kprobe", true),
    def("uprobe", "kprobe", true),
    def("uretprobe", "kprobe", true),
    def("ksyscall", "kprobe", true),
    def("kretsyscall", "kprobe", true),
    def("usdt.s", "kprobe", true),
    def("usdt", "kprobe", true),
    def("tc/ingress", "sched_cls", false),
    def("tc/egress", "sched_cls", false),
    def("tcx/ingress", "sched_cls", false),
    def("tcx/egress", "sched_cls", false),
    def("tc", "sched_cls", false),
    def("classifier", "sched_cls", true),
    def("action", "sched_act", true),
    def("netkit/primary", "sched_cls", false),
    def("netkit/peer", "sched_cls", false),
    def("tracepoint", "tracepoint", true),
    def("tp", "tracepoint", true),
    def("raw_tracepoint.w", "raw_tracepoint_writable", true),
    def("raw_tp.w", "raw_tracepoint_writable", true),
    def("raw_tracepoint", "raw_tracepoint", true),
    def("raw_tp", "raw_tracepoint", true),
    def("tp_btf", "tracing", true),
    def("fentry.s", "tracing", true),
    def("fmod_ret.s", "tracing", true),
    def("fexit.s", "tracing", true),
    def("fentry", "tracing", true),
    def("fmod_ret", "tracing", true),
    def("fexit", "tracing", true),
    def("freplace", "ext", true),
    def("lsm.s", "lsm", true),
    def("lsm_cgroup", "lsm", true),
    def("lsm", "lsm", true),
    def("iter.s", "tracing", true),
    def("iter", "tracing", true),
    def("syscall", "syscall", false),
    def("xdp.frags/devmap", "xdp", false),
    def("xdp/devmap", "xdp", false),
    def("xdp.frags/cpumap", "xdp", false),
    def("xdp/cpumap", "xdp", false),
    def("xdp.frags", "xdp", false),
    def("xdp", "xdp", true),
    def("perf_event", "perf_event", false),
    def("lwt_in", "lwt_in", false),
    def("lwt_out", "lwt_out", false),
    def("lwt_xmit", "lwt_xmit", false),
    def("lwt_seg6local", "lwt_seg6local", false),
    def("sockops", "sock_ops", false),
    def("sk_skb/stream_parser", "sk_skb", false),
    def("sk_skb/stream_verdict", "sk_skb", false),
    def("sk_skb/verdict", "sk_skb", false),
    def("sk_skb", "sk_skb", false),
    def("sk_msg", "sk_msg", false),
    def("lirc_mode2", "lirc_mode2", false),
    def("flow_dissector", "flow_dissector", false),
    def("cgroup_skb/ingress", "cgroup_skb", false),
    def("cgroup_skb/egress", "cgroup_skb", false),
    def("cgroup/skb", "cgroup_skb", false),
    def("cgroup/sock_create", "cgroup_sock", false),
    def("cgroup/sock_release", "cgroup_sock", false),
    def("cgroup/sock", "cgroup_sock", false),
    def("cgroup/post_bind4", "cgroup_sock", false),
    def("cgroup/post_bind6", "cgroup_sock", false),
    def("cgroup/bind4", "cgroup_sock_addr", false),
    def("cgroup/bind6", "cgroup_sock_addr", false),
    def("cgroup/connect4", "cgroup_sock_addr", false),
    def("cgroup/connect6", "cgroup_sock_addr", false),
    def("cgroup/connect_unix", "cgroup_sock_addr", false),
    def("cgroup/sendmsg4", "cgroup_sock_addr", false),
    def("cgroup/sendmsg6", "cgroup_sock_addr", false),
    def("cgroup/sendmsg_unix", "cgroup_sock_addr", false),
    def("cgroup/recvmsg4", "cgroup_sock_addr", false),
    def("cgroup/recvmsg6", "cgroup_sock_addr", false),
    def("cgroup/recvmsg_unix", "cgroup_sock_addr", false),
    def("cgroup/getpeername4", "cgroup_sock_addr", false),
    def("cgroup/getpeername6", "cgroup_sock_addr", false),
    def("cgroup/getpeername_unix", "cgroup_sock_addr", false),
    def("cgroup/getsockname4", "cgroup_sock_addr", false),
    def("cgroup/getsockname6", "cgroup_sock_addr", false),
    def("cgroup/getsockname_unix", "cgroup_sock_addr", false),
    def("cgroup/sysctl", "cgroup_sysctl", false),
    def("cgroup/getsockopt", "cgroup_sockopt", false),
    def("cgroup/setsockopt", "cgroup_sockopt", false),
    def("cgroup/dev", "cgroup_device", false),
    def("struct_ops.s", "struct_ops", true),
    def("struct_ops", "struct_ops", true),
    def("sk_lookup", "sk_lookup", false),
    def("netfilter", "netfilter", false),
];

/// The definition a section name matches: the name itself, or `prefix/target` for definitions
/// that take a target. `None` for names libbpf would not load either.
pub fn classify(section: &str) -> Option<&'static SectionDef> {
    SECTION_DEFS.iter().find(|d| {
        section == d.prefix
            || (d.takes_target
                && section
                    .strip_prefix(d.prefix)
                    .is_some_and(|rest| rest.starts_with('/')))
    })
}

/// The attach target a section name carries (`tracepoint/syscalls/sys_enter_getpid` →
/// `syscalls/sys_enter_getpid`), if any.
pub fn attach_target(section: &str, def: &SectionDef) -> Option<String> {
    section
        .strip_prefix(def.prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The name aya 0.14 / aya-obj 0.3 understands for a libbpf section name it refuses, so the
/// agent can load the object from a private, renamed copy. `None` when no rename is needed or
/// none exists.
pub fn aya_section_name(section: &str) -> Option<&'static str> {
    match section {
        "tc" | "tc/ingress" | "tc/egress" | "tcx/ingress" | "tcx/egress" => Some("classifier"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_libbpf_names() {
        let t = |s| classify(s).map(|d| d.program_type);
        assert_eq!(t("xdp"), Some("xdp"));
        assert_eq!(t("xdp.frags"), Some("xdp"));
        assert_eq!(t("tc"), Some("sched_cls"));
        assert_eq!(t("tcx/ingress"), Some("sched_cls"));
        assert_eq!(t("classifier"), Some("sched_cls"));
        assert_eq!(
            t("tracepoint/syscalls/sys_enter_getpid"),
            Some("tracepoint")
        );
        assert_eq!(t("tp/sched/sched_switch"), Some("tracepoint"));
        assert_eq!(t("raw_tp/sys_enter"), Some("raw_tracepoint"));
        assert_eq!(t("tp_btf/sched_switch"), Some("tracing"));
        assert_eq!(t("kprobe/do_unlinkat"), Some("kprobe"));
        assert_eq!(t("uprobe//bin/bash:readline"), Some("kprobe"));
        assert_eq!(t("usdt"), Some("kprobe"));
        assert_eq!(t("fentry/do_unlinkat"), Some("tracing"));
        assert_eq!(t("lsm/file_open"), Some("lsm"));
        assert_eq!(t("cgroup_skb/ingress"), Some("cgroup_skb"));
        assert_eq!(t("sockops"), Some("sock_ops"));
        assert_eq!(t("sk_lookup"), Some("sk_lookup"));
        assert_eq!(t("struct_ops/dctcp_init"), Some("struct_ops"));
        assert_eq!(t("syscall"), Some("syscall"));
        assert_eq!(t("socket"), Some("socket_filter"));
        assert_eq!(t("weird/thing"), None);
        assert_eq!(t("xdpfoo"), None);
        let d = classify("tracepoint/syscalls/sys_enter_getpid").unwrap();
        assert_eq!(
            attach_target("tracepoint/syscalls/sys_enter_getpid", d).as_deref(),
            Some("syscalls/sys_enter_getpid")
        );
    }
}
