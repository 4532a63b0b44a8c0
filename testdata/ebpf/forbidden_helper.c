// Tracepoint program calling helpers a policy forbids (bpf_send_signal, bpf_probe_write_user).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tracepoint/syscalls/sys_enter_kill")
int signal_back(void *ctx)
{
	__u32 v = 0;
	bpf_probe_write_user((void *)0x1000, &v, sizeof(v));
	bpf_send_signal(9);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
