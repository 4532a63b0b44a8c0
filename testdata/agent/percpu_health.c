// A version whose `bpfship_health` map is a per-CPU array: the kernel returns one 8-byte value
// per possible CPU for each key, so a reader that follows the convention with an 8-byte buffer
// gets its memory overwritten. The agent must refuse this version, not read the map.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} bpfship_health SEC(".maps");

SEC("xdp")
int filter(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&bpfship_health, &key);
	if (v)
		*v += 1;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
