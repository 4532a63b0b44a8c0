// The agent's test program: one XDP program ("filter") whose behaviour is chosen at build time.
//   -DVERSION=n        makes each version's bytecode (and digest) distinct
//   -DBEHAVIOUR=...    GOOD (pass, count good), ABORT (XDP_ABORTED), DROP (drop, count bad),
//                      BAD_COUNTER (pass, count bad), REJECT (the kernel verifier refuses it)
//   -DFRAGS            puts it in section xdp.frags (multi-buffer): the dispatcher cannot tail-call it
// Health convention (documented in the agent's README): array map `bpfship_health`,
// key 0 = good events, key 1 = bad events. `seen` counts every packet this version saw.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfship_health.h"

#define GOOD 0
#define ABORT 1
#define DROP 2
#define BAD_COUNTER 3
#define REJECT 4

#ifndef VERSION
#define VERSION 1
#endif
#ifndef BEHAVIOUR
#define BEHAVIOUR GOOD
#endif

#ifdef FRAGS
SEC("xdp.frags")
#else
SEC("xdp")
#endif
int filter(struct xdp_md *ctx)
{
	/* Never true for real traffic: makes each version's bytecode distinct. */
	if (ctx->rx_queue_index == 0x7fff0000 + VERSION)
		return XDP_PASS;
#if BEHAVIOUR == ABORT
	return XDP_ABORTED;
#elif BEHAVIOUR == DROP
	bpfship_count(BPFSHIP_BAD);
	return XDP_DROP;
#elif BEHAVIOUR == BAD_COUNTER
	bpfship_count(BPFSHIP_BAD);
	return XDP_PASS;
#elif BEHAVIOUR == REJECT
	/* Reads packet data without a bounds check: the kernel verifier refuses this. */
	return *(volatile __u8 *)(long)ctx->data == 0 ? XDP_PASS : XDP_PASS;
#else
	bpfship_count(BPFSHIP_GOOD);
	return XDP_PASS;
#endif
}

char LICENSE[] SEC("license") = "GPL";
