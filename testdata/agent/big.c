// A ~100 KB XDP object for the agent's "new digest → canary attached" benchmark: a large
// read-only table the program indexes. -DVERSION=n makes versions distinct.
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

#define ROW(n) n, n + 1, n + 2, n + 3, n + 4, n + 5, n + 6, n + 7
const volatile unsigned char table[96 * 1024] = { ROW(VERSION) };

SEC("xdp")
int filter(struct xdp_md *ctx)
{
	__u32 key = table[ctx->rx_queue_index & 0xffff] == 255 ? 1 : 0;
	__u64 *v = bpf_map_lookup_elem(&bpfship_health, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
