// faultstorm: a fixed amount of page-fault or mmap work for memdiag's
// benchmark harness (bench/), timed by the program itself.
//
// Usage: faultstorm [-m fault|mmap|read|getppid|fork] [-n ITERATIONS] [-s BYTES] [-w]
//
//   -m fault  each iteration mmaps BYTES (default 64 MiB) of anonymous
//             memory, writes one byte per 4 KiB page (one minor fault each)
//             and munmaps it: the page-fault and RSS-change path.
//   -m mmap   each iteration mmaps BYTES (default 64 KiB) of anonymous
//             memory and munmaps it untouched: the mmap/munmap syscall path.
//   -m read   each iteration reads one byte from /dev/zero (a file, not a
//             socket): the read syscall path, two syscall tracepoints each.
//   -m getppid each iteration calls getppid: a syscall no hook names, what
//             every syscall pays for hooks on others.
//   -m fork   each iteration forks a child that exits at once, and waits for
//             it: a traced process's fork and exit records (the ring buffer).
//   -n N      iterations (default 200 for fault, 200000 for mmap, 400000 for read).
//   -w        print "ready <pid>" and wait for a line on stdin before the
//             work, then, after the result, wait for EOF on stdin before
//             exiting, so a tracer can attach before the work and read its
//             own numbers while the target is still alive.
//
// Output, one line after the work:
//   result mode=M iterations=N bytes=B elapsed_ns=T faults=F faults_per_sec=R
//          syscalls=S syscalls_per_sec=R cpu_ns=C
// elapsed_ns is CLOCK_MONOTONIC time around the work; faults are the minor
// faults and cpu_ns the user+system CPU time getrusage(2) counted during it.
//
// Transparent huge pages are disabled for the process, so a fault is always
// one 4 KiB page whatever /sys/kernel/mm/transparent_hugepage/enabled says.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static void die(const char *what)
{
	fprintf(stderr, "faultstorm: %s: %s\n", what, strerror(errno));
	exit(1);
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long tv_ns(struct timeval tv)
{
	return (long long)tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL;
}

/* Returns the minor faults so far and stores the CPU time in *cpu_ns. */
static long counters(long long *cpu_ns)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru))
		die("getrusage");
	*cpu_ns = tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime);
	return ru.ru_minflt;
}

static void bad_usage(void)
{
	fprintf(stderr, "usage: faultstorm [-m fault|mmap|read|getppid|fork] [-n ITERATIONS] [-s BYTES] [-w]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *mode = "fault";
	long iters = 0;
	size_t size = 0;
	int wait = 0, opt;
	char line[64];

	while ((opt = getopt(argc, argv, "m:n:s:w")) != -1) {
		switch (opt) {
		case 'm': mode = optarg; break;
		case 'n': iters = atol(optarg); break;
		case 's': size = strtoull(optarg, NULL, 10); break;
		case 'w': wait = 1; break;
		default: bad_usage();
		}
	}
	int fault = !strcmp(mode, "fault"), rd = !strcmp(mode, "read"), nop = !strcmp(mode, "getppid");
	int frk = !strcmp(mode, "fork");
	if (!fault && !rd && !nop && !frk && strcmp(mode, "mmap"))
		bad_usage();
	if (frk && !iters)
		iters = 20000;
	rd |= nop; /* one syscall per iteration, in the read loop */
	if (!iters)
		iters = fault ? 200 : rd ? 400000 : 200000;
	if (!size)
		size = fault ? 64 << 20 : 64 << 10;
	if (iters < 0 || size < PAGE)
		bad_usage();
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		die("prctl(PR_SET_THP_DISABLE)");

	if (wait) {
		printf("ready %d\n", getpid());
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			return 1;
	}

	int zero = -1;
	if (rd && !nop && (zero = open("/dev/zero", O_RDONLY)) < 0)
		die("open /dev/zero");
	long long c0, c1;
	long f0 = counters(&c0);
	long long t0 = now_ns();
	for (long i = 0; rd && i < iters; i++) {
		char b;
		if (nop)
			syscall(SYS_getppid);
		else if (read(zero, &b, 1) != 1)
			die("read");
	}
	for (long i = 0; frk && i < iters; i++) {
		pid_t c = fork();
		if (c < 0)
			die("fork");
		if (c == 0)
			_exit(0);
		if (waitpid(c, NULL, 0) != c)
			die("waitpid");
	}
	for (long i = 0; !rd && !frk && i < iters; i++) {
		volatile char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			die("mmap");
		if (fault)
			for (size_t off = 0; off < size; off += PAGE)
				p[off] = 1;
		if (munmap((void *)p, size))
			die("munmap");
	}
	long long elapsed = now_ns() - t0;
	long faults = counters(&c1) - f0;
	double secs = elapsed / 1e9;

	printf("result mode=%s iterations=%ld bytes=%zu elapsed_ns=%lld faults=%ld faults_per_sec=%.0f syscalls=%ld syscalls_per_sec=%.0f cpu_ns=%lld\n",
	       mode, iters, size, elapsed, faults, faults / secs, (rd ? 1 : 2) * iters, (rd ? 1 : 2) * iters / secs, c1 - c0);
	fflush(stdout);

	if (wait)
		while (fgets(line, sizeof(line), stdin))
			;
	return 0;
}
