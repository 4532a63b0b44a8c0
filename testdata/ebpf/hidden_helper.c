// Forbidden helpers hidden in functions a program calls rather than in the program's own body:
// a static noinline function placed in the program's own section (a pc-relative call, no
// relocation), a chain of static and global functions in .text (relocated calls), and a program
// that calls only a harmless .text function (it must not be blamed for the others). And a helper
// id no validator knows, which cannot be shown not to be a forbidden one.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define KILL_SEC "tracepoint/syscalls/sys_enter_kill"

static __attribute__((noinline, section(KILL_SEC))) int hidden_in_section(int sig)
{
	return bpf_send_signal(sig);
}

SEC(KILL_SEC)
int signal_back(void *ctx)
{
	return hidden_in_section(9);
}

static __attribute__((noinline)) int write_user(void)
{
	__u32 v = 0;
	return bpf_probe_write_user((void *)0x1000, &v, sizeof(v));
}

__attribute__((noinline)) int global_step(int x)
{
	return write_user() + x;
}

static __attribute__((noinline)) int harmless(int x)
{
	return x + (int)bpf_ktime_get_ns();
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int write_back(void *ctx)
{
	return global_step(1);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int innocent(void *ctx)
{
	return harmless(2);
}

SEC("tracepoint/syscalls/sys_enter_getuid")
int unknown_id(void *ctx)
{
	return ((long (*)(void))9999)();
}

char LICENSE[] SEC("license") = "GPL";
