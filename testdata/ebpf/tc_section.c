// A TC classifier in libbpf's plain "tc" section (aya 0.14 does not know the name).
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int tc_accept(struct __sk_buff *skb)
{
	return skb->len > 0 ? TC_ACT_OK : TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
