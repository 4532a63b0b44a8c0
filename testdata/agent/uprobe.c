// A uprobe version for the agent's uprobe deployment test (attached by the agent to libc's
// getpid): counts calls in `bpfship_health` (key 0 = good). -DVERSION=n makes versions distinct.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfship_health.h"

#ifndef VERSION
#define VERSION 1
#endif

SEC("uprobe")
int probe(void *ctx)
{
	bpfship_add(BPFSHIP_GOOD, VERSION);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
