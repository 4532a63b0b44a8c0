// Calls a GPL-only helper (bpf_trace_printk via bpf_printk) under a proprietary license.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tracepoint/syscalls/sys_enter_getpid")
int print_it(void *ctx)
{
	bpf_printk("getpid");
	return 0;
}

char LICENSE[] SEC("license") = "Proprietary";
