// memwork: a deterministic memory workload for memdiag's tests.
//
// It reads one command per line on stdin, does exactly that, and answers
// one line on stdout: "ok <cmd> rss=<B> anon=<B> file=<B> shmem=<B> hwm=<B>"
// with its own /proc/self/status values in bytes. It starts by printing
// "ready <pid>". Tests step it with these markers instead of sleeping.
//
// Commands (N in bytes, with an optional K/M/G suffix):
//   anon N        mmap N anonymous bytes and write every page (kept)
//   heap N        malloc N bytes from the brk heap and write every page (kept)
//   file N PATH   write a file of N bytes, mmap it shared and read every page
//   shm N         mmap N bytes MAP_SHARED|MAP_ANONYMOUS and write every page
//   unmap         munmap the last anon region
//   dontneed      madvise(MADV_DONTNEED) the last anon region
//   thread N      a thread named "memwork-thr" maps and writes N bytes (kept), joined
//   threads N K   K threads at once each map and write N bytes (kept), joined
//   fork N        a child maps and writes N bytes, reports, and exits; waited for
//   spin N        map, write and unmap N bytes 100 times (a fault storm)
//   malloc N K    malloc K chunks of N bytes and write every page (kept until freeall)
//   freeall       free every chunk malloc kept
//   threshold N   mallopt(M_MMAP_THRESHOLD, N): chunks of N bytes and more get mappings of their own
//   exec          exec memwork again (a new image: "ready" again, no status line)
//   status        do nothing, answer the status line
//   exit [CODE]   exit with CODE (default 0)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_REGIONS 256

static struct region {
	char *addr;
	size_t len;
} regions[MAX_REGIONS];
static int nregions;

static void die(const char *what)
{
	fprintf(stdout, "error %s: %s\n", what, strerror(errno));
	fflush(stdout);
	exit(3);
}

static size_t parse_size(const char *s)
{
	char *end;
	unsigned long long n = strtoull(s, &end, 10);
	switch (*end) {
	case 'K': case 'k': n <<= 10; break;
	case 'M': case 'm': n <<= 20; break;
	case 'G': case 'g': n <<= 30; break;
	}
	return (size_t)n;
}

static void touch(char *p, size_t len)
{
	for (size_t i = 0; i < len; i += 4096)
		p[i] = 1;
}

static void status_line(const char *cmd)
{
	long long rss = 0, anon = 0, file = 0, shmem = 0, hwm = 0;
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		die("status");
	while (fgets(line, sizeof(line), f)) {
		long long v;
		if (sscanf(line, "VmRSS: %lld", &v) == 1) rss = v * 1024;
		else if (sscanf(line, "RssAnon: %lld", &v) == 1) anon = v * 1024;
		else if (sscanf(line, "RssFile: %lld", &v) == 1) file = v * 1024;
		else if (sscanf(line, "RssShmem: %lld", &v) == 1) shmem = v * 1024;
		else if (sscanf(line, "VmHWM: %lld", &v) == 1) hwm = v * 1024;
	}
	fclose(f);
	printf("ok %s rss=%lld anon=%lld file=%lld shmem=%lld hwm=%lld\n", cmd, rss, anon, file, shmem, hwm);
	fflush(stdout);
}

#define MAX_CHUNKS 4096
static char *chunks[MAX_CHUNKS];
static int nchunks;

static char *map_anon(size_t len, int flags)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static void keep(char *p, size_t len)
{
	if (nregions == MAX_REGIONS) {
		errno = ENOSPC;
		die("regions");
	}
	regions[nregions].addr = p;
	regions[nregions].len = len;
	nregions++;
}

static void *thread_main(void *arg)
{
	size_t n = *(size_t *)arg;
	char *p = map_anon(n, MAP_PRIVATE);
	touch(p, n);
	return p;
}

int main(void)
{
	char line[4096];
	/* Keep malloc on the brk heap so `heap` exercises brk. */
	mallopt(M_MMAP_THRESHOLD, 1 << 30);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
	printf("ready %d\n", getpid());
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		char cmd[32] = "", a1[256] = "", a2[1024] = "";
		line[strcspn(line, "\n")] = 0;
		if (sscanf(line, "%31s %255s %1023s", cmd, a1, a2) < 1)
			continue;
		size_t n = a1[0] ? parse_size(a1) : 0;
		if (!strcmp(cmd, "anon")) {
			char *p = map_anon(n, MAP_PRIVATE);
			touch(p, n);
			keep(p, n);
		} else if (!strcmp(cmd, "heap")) {
			char *p = malloc(n);
			if (!p)
				die("malloc");
			touch(p, n);
		} else if (!strcmp(cmd, "file")) {
			int fd = open(a2, O_RDWR | O_CREAT | O_TRUNC, 0600);
			if (fd < 0 || ftruncate(fd, n) < 0)
				die("file");
			char buf[65536];
			memset(buf, 7, sizeof(buf));
			for (size_t off = 0; off < n; off += sizeof(buf))
				if (write(fd, buf, n - off < sizeof(buf) ? n - off : sizeof(buf)) < 0)
					die("write");
			char *p = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
			if (p == MAP_FAILED)
				die("mmap file");
			volatile char sum = 0;
			for (size_t i = 0; i < n; i += 4096)
				sum += p[i];
			close(fd);
		} else if (!strcmp(cmd, "shm")) {
			char *p = map_anon(n, MAP_SHARED);
			touch(p, n);
		} else if (!strcmp(cmd, "unmap")) {
			if (!nregions) { errno = ENOENT; die("unmap"); }
			nregions--;
			if (munmap(regions[nregions].addr, regions[nregions].len))
				die("munmap");
		} else if (!strcmp(cmd, "dontneed")) {
			if (!nregions) { errno = ENOENT; die("dontneed"); }
			struct region *r = &regions[nregions - 1];
			if (madvise(r->addr, r->len, MADV_DONTNEED))
				die("madvise");
		} else if (!strcmp(cmd, "thread")) {
			pthread_t t;
			void *p;
			if (pthread_create(&t, NULL, thread_main, &n))
				die("pthread_create");
			pthread_setname_np(t, "memwork-thr");
			pthread_join(t, &p);
		} else if (!strcmp(cmd, "threads")) {
			pthread_t ts[64];
			long k = atol(a2);
			if (k < 1 || k > 64) {
				errno = EINVAL;
				die("threads");
			}
			for (long i = 0; i < k; i++)
				if (pthread_create(&ts[i], NULL, thread_main, &n))
					die("pthread_create");
			for (long i = 0; i < k; i++)
				pthread_join(ts[i], NULL);
		} else if (!strcmp(cmd, "fork")) {
			pid_t pid = fork();
			if (pid < 0)
				die("fork");
			if (pid == 0) {
				char *p = map_anon(n, MAP_PRIVATE);
				touch(p, n);
				_exit(0);
			}
			int st;
			if (waitpid(pid, &st, 0) < 0)
				die("waitpid");
		} else if (!strcmp(cmd, "spin")) {
			for (int i = 0; i < 100; i++) {
				char *p = map_anon(n, MAP_PRIVATE);
				touch(p, n);
				munmap(p, n);
			}
		} else if (!strcmp(cmd, "malloc")) {
			long k = atol(a2);
			for (long i = 0; i < k && nchunks < MAX_CHUNKS; i++) {
				char *p = malloc(n);
				if (!p)
					die("malloc");
				touch(p, n);
				p[n - 1] = 1;
				chunks[nchunks++] = p;
			}
		} else if (!strcmp(cmd, "threshold")) {
			mallopt(M_MMAP_THRESHOLD, (int)n);
		} else if (!strcmp(cmd, "freeall")) {
			while (nchunks > 0)
				free(chunks[--nchunks]);
		} else if (!strcmp(cmd, "exec")) {
			char self[4096];
			ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
			if (n < 0)
				die("readlink");
			self[n] = 0;
			execl(self, self, (char *)NULL);
			die("exec");
		} else if (!strcmp(cmd, "status")) {
			/* just answer */
		} else if (!strcmp(cmd, "exit")) {
			exit(a1[0] ? atoi(a1) : 0);
		} else {
			printf("error unknown command %s\n", cmd);
			fflush(stdout);
			continue;
		}
		status_line(cmd);
	}
	return 0;
}
