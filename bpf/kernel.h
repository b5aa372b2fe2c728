/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel types memdiag reads, declared by hand instead of a 130k-line
 * vmlinux.h. preserve_access_index makes every field access a CO-RE
 * relocation, so the offsets come from the running kernel's BTF at load time
 * and only the field names below must exist there.
 */
#ifndef MEMDIAG_KERNEL_H
#define MEMDIAG_KERNEL_H

#include <linux/types.h>

#define PAGE_SHIFT 12

typedef __u8 u8;
typedef __u16 u16;
typedef __s16 s16;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;
typedef __s64 s64;

struct task_struct;

/* include/linux/percpu_counter.h: an mm's RSS counter is count plus one
 * s32 per CPU (mm->rss_stat[MM_*], since Linux 6.2). */
struct percpu_counter {
	s64 count;
	s32 *counters; /* __percpu */
} __attribute__((preserve_access_index));

struct mm_struct {
	unsigned long brk;
	unsigned long total_vm; /* pages */
	struct percpu_counter rss_stat[4];
	struct task_struct *owner; /* CONFIG_MEMCG: the task that owns the mm, NULL while it is torn down */
} __attribute__((preserve_access_index));

struct file {
	void *private_data; /* struct socket * for a socket */
} __attribute__((preserve_access_index));

struct fdtable {
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct in6_addr {
	union {
		u8 u6_addr8[16];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	u32 skc_daddr;               /* peer IPv4 address, network order */
	u16 skc_dport;               /* peer port, network order */
	u16 skc_num;                 /* local port, host order */
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct socket {
	struct sock *sk;
} __attribute__((preserve_access_index));

/* arch/x86/include/asm/thread_info.h */
struct thread_info {
	u32 status; /* TS_COMPAT: the current syscall is a 32-bit one */
} __attribute__((preserve_access_index));

struct task_struct {
	struct thread_info thread_info; /* CONFIG_THREAD_INFO_IN_TASK */
	struct mm_struct *mm;
	struct files_struct *files;
	int exit_code;
	int pid;
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

/*
 * struct pt_regs, the context of a uprobe program and what
 * bpf_task_pt_regs points to: the architecture's user ABI header defines
 * it (x86_64: rdi, rsi, ..., rsp). The programs read it only through
 * bpf_tracing.h's PT_REGS_* macros, which bpf2go's -target selects
 * (-D__TARGET_ARCH_x86), so a build for another architecture reads that
 * architecture's registers or fails to compile, never reads the wrong ones.
 */
#include <asm/ptrace.h>

/*
 * The record of a syscall's entry, laid out as the syscalls:sys_enter_*
 * tracepoints' (/sys/kernel/tracing/events/syscalls/sys_enter_<name>/format:
 * args at 16 + 8*i); syscalls.bpf.h builds it from the registers for the
 * handlers.
 */
struct tp_sys_enter {
	u64 common;
	s32 nr;
	u32 _pad;
	u64 args[6];
};

#endif
