// Versions for verdict counting (no bpfship_health map: the agent counts return values itself).
//   -DVERSION=n      distinct bytecode per version
//   -DBEHAVIOUR=...  PASS_ALL (default), DROP_ALL, TX_ALL (turns PASS into TX), MIXED (UDP
//                    source port odd → DROP, even → PASS)
// Several exits in the main function and a subprogram (`decide`, not inlined) so the
// instrumentation's rewrite is exercised across jumps, exits and bpf-to-bpf calls.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define PASS_ALL 0
#define DROP_ALL 1
#define TX_ALL 2
#define MIXED 3

#ifndef VERSION
#define VERSION 1
#endif
#ifndef BEHAVIOUR
#define BEHAVIOUR PASS_ALL
#endif

static __attribute__((noinline)) int decide(__u32 port)
{
#if BEHAVIOUR == MIXED
	return (port & 1) ? XDP_DROP : XDP_PASS;
#elif BEHAVIOUR == DROP_ALL
	return XDP_DROP;
#elif BEHAVIOUR == TX_ALL
	return port == 0 ? XDP_PASS : XDP_TX;
#else
	return port == 0x10000 ? XDP_DROP : XDP_PASS;
#endif
}

SEC("xdp")
int filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp = data + sizeof(*eth) + sizeof(struct iphdr);

	/* Never true for real traffic: makes each version's bytecode distinct. */
	if (ctx->rx_queue_index == 0x7fff0000 + VERSION)
		return XDP_PASS;
	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) {
#if BEHAVIOUR == DROP_ALL
		return XDP_DROP;
#elif BEHAVIOUR == TX_ALL
		return XDP_TX;
#else
		return XDP_PASS;
#endif
	}
	return decide(bpf_ntohs(udp->source));
}

char LICENSE[] SEC("license") = "GPL";
