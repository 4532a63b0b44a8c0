// An XDP version with a map pinned by name (LIBBPF_PIN_BY_NAME): its contents must survive
// version changes, so a version that changes its definition is refused. -DENTRIES=n.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef VERSION
#define VERSION 1
#endif
#ifndef ENTRIES
#define ENTRIES 16
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_state SEC(".maps");

SEC("xdp")
int filter(struct xdp_md *ctx)
{
	if (ctx->rx_queue_index == 0x7fff0000 + VERSION)
		return XDP_PASS;
	__u32 key = ctx->rx_queue_index & (ENTRIES - 1);
	__u64 *v = bpf_map_lookup_elem(&flow_state, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
