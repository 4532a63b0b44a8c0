// A ~100 KB XDP object for the agent's "new digest → canary attached" benchmark: a large
// read-only table the program indexes. -DVERSION=n makes versions distinct.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfship_health.h"

#ifndef VERSION
#define VERSION 1
#endif

#define ROW(n) n, n + 1, n + 2, n + 3, n + 4, n + 5, n + 6, n + 7
const volatile unsigned char table[96 * 1024] = { ROW(VERSION) };

SEC("xdp")
int filter(struct xdp_md *ctx)
{
	bpfship_count(table[ctx->rx_queue_index & 0xffff] == 255 ? BPFSHIP_BAD : BPFSHIP_GOOD);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
