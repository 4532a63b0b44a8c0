// An XDP program with no license section: must be flagged, never assumed GPL.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int unlicensed(struct xdp_md *ctx)
{
	return XDP_PASS;
}
