// bpfship's health-counter convention: an array map named `bpfship_health` with __u32 keys and
// __u64 values; key 0 counts good events, key 1 bad events. The agent compares the canary's
// bad ÷ (good + bad) with the stable version's (the `bad_events` check). Include this header
// and call bpfship_count(BPFSHIP_GOOD) / bpfship_count(BPFSHIP_BAD).
#ifndef BPFSHIP_HEALTH_H
#define BPFSHIP_HEALTH_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define BPFSHIP_GOOD 0
#define BPFSHIP_BAD 1

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} bpfship_health SEC(".maps");

static __always_inline void bpfship_add(__u32 key, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&bpfship_health, &key);
	if (v)
		__sync_fetch_and_add(v, n);
}

static __always_inline void bpfship_count(__u32 key)
{
	bpfship_add(key, 1);
}

#endif
