// Several programs, one in a section no loader knows: the report must still cover the others.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) int shared_logic(int x)
{
	return x + (int)bpf_ktime_get_ns();
}

SEC("xdp")
int first(struct xdp_md *ctx)
{
	return shared_logic(0) > 0 ? XDP_PASS : XDP_DROP;
}

SEC("classifier")
int second(struct __sk_buff *skb)
{
	return 0;
}

SEC("weird/thing")
int third(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
