// Return probes, a tcx classifier and per-CPU maps: the program and map types whose names
// bpfman spells its own way (kretprobe, uretprobe, tcx; per_cpu_array, lru_per_cpu_hash).
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} per_cpu_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} recent SEC(".maps");

static __always_inline int count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&per_cpu_counts, &slot);
	if (v)
		*v += 1;
	return 0;
}

SEC("kretprobe/do_unlinkat")
int on_unlink_return(void *ctx)
{
	return count(0);
}

SEC("uretprobe//bin/bash:readline")
int on_readline_return(void *ctx)
{
	__u32 k = 1;
	__u64 one = 1;
	bpf_map_update_elem(&recent, &k, &one, BPF_ANY);
	return count(1);
}

SEC("tcx/ingress")
int tcx_accept(struct __sk_buff *skb)
{
	count(2);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
