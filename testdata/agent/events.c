// A tracepoint version for the agent's tracepoint deployment test: counts sys_enter_getpid
// events in `bpfship_health` (key 0 = good). -DVERSION=n makes versions distinct.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfship_health.h"

#ifndef VERSION
#define VERSION 1
#endif

SEC("tracepoint/syscalls/sys_enter_getpid")
int events(void *ctx)
{
	bpfship_add(BPFSHIP_GOOD, VERSION);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
