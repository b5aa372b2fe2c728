/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Syscalls: one BTF raw tracepoint pair, `sys_enter` and `sys_exit`, with a
 * dispatch on the syscall number, instead of a perf-event tracepoint per
 * syscall (syscalls:sys_enter_read, ...).
 *
 * Why: detaching a perf-event tracepoint waits, under the kernel's
 * event_mutex, for two RCU grace periods when its last user goes
 * (perf_trace_event_unreg → tracepoint_synchronize_unregister), so the ~40
 * syscall tracepoints memdiag used took about 2 s to detach, one after the
 * other: memdiag's exit after SIGTERM. A raw tracepoint link detaches
 * without waiting. The per-syscall tracepoints also made the kernel build
 * a trace record (the six arguments) before each program ran; the raw pair
 * reads the registers it needs, and only for a target.
 *
 * What it costs: a program runs at the entry and exit of every syscall of
 * every process, not only of the hooked ones; its untraced exit is the
 * target bitmap test (core.bpf.h maybe_target) before anything else. The
 * figures, for the traced process and for bystanders, are in BENCHMARKS.md.
 *
 * The handlers (mappings.bpf.h, ops.bpf.h) take at entry the same record
 * the per-syscall tracepoints gave (struct tp_sys_enter, built here on the
 * stack), at exit the return value (and the registers, where the exit
 * reads the syscall's arguments itself: the reads, mmap, mremap and
 * mprotect have no entry handler), and are static non-inlined functions: each is verified
 * once, at its one call site. Numbers are x86_64's (memdiag is built for
 * amd64 only); a 32-bit (ia32) syscall of a target has other numbers and
 * is skipped, as the per-syscall tracepoints skipped it.
 */
#ifndef MEMDIAG_SYSCALLS_BPF_H
#define MEMDIAG_SYSCALLS_BPF_H

/* x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl); the
 * read and write variants with iovecs are in ops.bpf.h (io_kind). */
#define NR_READ 0
#define NR_WRITE 1
#define NR_CLOSE 3
#define NR_POLL 7
#define NR_MMAP 9
#define NR_MPROTECT 10
#define NR_MUNMAP 11
#define NR_BRK 12
#define NR_MREMAP 25
#define NR_MADVISE 28
#define NR_EXECVE 59
#define NR_EXECVEAT 322
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_EPOLL_WAIT 232
#define NR_PPOLL 271
#define NR_EPOLL_PWAIT 281
#define NR_ACCEPT4 288
#define NR_EPOLL_PWAIT2 441

#define TS_COMPAT 0x0002 /* arch/x86/include/asm/thread_info.h: an ia32 syscall */

/* The current process's id, read from the task: the kernel inlines
 * bpf_get_current_task_btf on x86_64, where bpf_get_current_pid_tgid is a
 * call. Every syscall of every process pays this first test. */
static __always_inline u32 current_tgid(void)
{
	return bpf_get_current_task_btf()->tgid;
}

/* Nonzero when the current syscall is a 32-bit one (other numbers). */
static __always_inline int compat_syscall(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	return task->thread_info.status & TS_COMPAT;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	if (!maybe_target(current_tgid()) || compat_syscall())
		return 0;
	struct tp_sys_enter c = {
		.nr = (s32)id,
		/* The first five: no handler reads the sixth. */
		.args = { PT_REGS_PARM1_SYSCALL(regs), PT_REGS_PARM2_SYSCALL(regs),
			  PT_REGS_PARM3_SYSCALL(regs), PT_REGS_PARM4_SYSCALL(regs),
			  PT_REGS_PARM5_SYSCALL(regs), 0 },
	};
	switch (id) {
	case NR_WRITE:
	case NR_SENDTO:
	case NR_WRITEV:
	case NR_SENDMSG:
		return on_enter_write(&c);
	case NR_CLOSE:
		return on_enter_close(&c);
	case NR_CONNECT:
		return on_enter_connect(&c);
	case NR_MUNMAP:
		return on_enter_munmap(&c);
	case NR_BRK:
		return on_enter_brk(&c);
	case NR_MADVISE:
		return on_enter_madvise(&c);
	case NR_EXECVE:
	case NR_EXECVEAT:
		return on_enter_execve();
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	if (!maybe_target(current_tgid()) || compat_syscall())
		return 0;
	flush_fault(bpf_get_current_task_btf()->pid);
	/* The handlers take the return value (and regs): the dispatch keeps
	 * no stack, for the deepest handler's call chain (512 bytes in all). */
	switch (regs->orig_rax) { /* the syscall number (x86_64's pt_regs) */
	case NR_READ:
	case NR_RECVFROM:
	case NR_READV:
	case NR_RECVMSG:
		return on_exit_read(regs, ret);
	case NR_WRITE:
	case NR_SENDTO:
	case NR_WRITEV:
	case NR_SENDMSG:
		return on_exit_write(ret);
	case NR_EPOLL_WAIT:
	case NR_EPOLL_PWAIT:
	case NR_EPOLL_PWAIT2:
	case NR_POLL:
	case NR_PPOLL:
		return on_exit_poll(ret);
	case NR_ACCEPT:
	case NR_ACCEPT4:
		return on_exit_accept(ret);
	case NR_MMAP:
		return on_exit_mmap(regs, ret);
	case NR_MUNMAP:
		return on_exit_munmap(ret);
	case NR_MREMAP:
		return on_exit_mremap(regs, ret);
	case NR_BRK:
		return on_exit_brk(ret);
	case NR_MPROTECT:
		return on_exit_mprotect(regs, ret);
	case NR_MADVISE:
		return on_exit_madvise(ret);
	case NR_EXECVE:
	case NR_EXECVEAT:
		return on_exit_execve(ret);
	}
	return 0;
}

#endif /* MEMDIAG_SYSCALLS_BPF_H */
