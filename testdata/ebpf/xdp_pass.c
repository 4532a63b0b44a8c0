// XDP program that counts packets in a BTF-defined array map and passes them.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} bpfship_health SEC(".maps");

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *good = bpf_map_lookup_elem(&bpfship_health, &key);
	if (good)
		__sync_fetch_and_add(good, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
