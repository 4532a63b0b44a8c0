// A uprobe version for the agent's uprobe deployment test (attached by the agent to libc's
// getpid): counts calls in `bpfship_health` (key 0 = good). -DVERSION=n makes versions distinct.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef VERSION
#define VERSION 1
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} bpfship_health SEC(".maps");

SEC("uprobe")
int probe(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&bpfship_health, &key);
	if (v)
		__sync_fetch_and_add(v, VERSION);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
