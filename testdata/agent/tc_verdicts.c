// TC versions for verdict counting (section `tc`, renamed for aya at load).
//   -DVERSION=n      distinct bytecode per version
//   -DBEHAVIOUR=...  OK_ALL (default), SHOT_ALL (drops everything), REDIRECT_ALL (sends every
//                    packet back out of the interface it came in on, instead of passing it)
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define OK_ALL 0
#define SHOT_ALL 1
#define REDIRECT_ALL 2

#ifndef VERSION
#define VERSION 1
#endif
#ifndef BEHAVIOUR
#define BEHAVIOUR OK_ALL
#endif

SEC("tc")
int classify(struct __sk_buff *skb)
{
	/* Never true for real traffic: makes each version's bytecode distinct. */
	if (skb->mark == 0x7fff0000 + VERSION)
		return TC_ACT_OK;
#if BEHAVIOUR == SHOT_ALL
	return TC_ACT_SHOT;
#elif BEHAVIOUR == REDIRECT_ALL
	return bpf_redirect(skb->ifindex, 0);
#else
	return TC_ACT_OK;
#endif
}

char LICENSE[] SEC("license") = "GPL";
