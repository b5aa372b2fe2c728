// reqstorm: a storm of short HTTP requests on 127.0.0.1 for memdiag's
// benchmark harness (bench/) and its ring buffer tests: every request a
// traced server reads begins an op (an OP_BEGIN record) and the next one on
// the same connection ends it (an OP_END record), so N requests make 2N
// ring buffer records.
//
// Usage: reqstorm serve [-t THREADS] [-k DEPTH]
//        reqstorm client -p PORT [-c CONNS] [-n REQUESTS] [-k DEPTH] [-r RATE]
//
//   serve     listens on 127.0.0.1 (a free port), prints "ready <pid>
//             port=<port>", and serves each accepted connection in one of
//             THREADS threads (default 4): it reads requests and writes
//             one response per request, until the client closes. It runs
//             until killed or its stdin closes; memdiag traces it.
//   client    opens CONNS keep-alive connections (default 4, one thread
//             each) and sends REQUESTS requests (default 200000) in all,
//             "GET /storm HTTP/1.1", each answered before the next on that
//             connection, then closes them and prints its result. Run it
//             untraced, from outside the server's process tree. CONNS
//             must not exceed the server's THREADS.
//   -r RATE   the client paces itself to RATE requests per second in all
//             (each connection sends what is due every millisecond);
//             default 0, as fast as the server answers.
//   -k DEPTH  pipelining: the client writes DEPTH requests at once and
//             then reads DEPTH responses; the server writes each response
//             on its own, so a read of DEPTH requests makes one op begin
//             and each response after the first begins the next pipelined
//             op: 2 records per request plus an EV_OP_DATA record per
//             read with the requests after the first (40,000 requests
//             at DEPTH 8: 85,000 records), from fewer syscalls.
//             Default 1 (no pipelining). Both sides must use the same.
//
// Client output, one line after the work:
//   result mode=client requests=N conns=C depth=K rate=R elapsed_ns=T
//          requests_per_sec=R cpu_ns=C
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 64

static const char request[] = "GET /storm HTTP/1.1\r\nHost: storm\r\n\r\n";
static const char response[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
#define REQ_LEN (sizeof(request) - 1)
#define RESP_LEN (sizeof(response) - 1)

static int depth = 1;

static void die(const char *what)
{
	fprintf(stderr, "reqstorm: %s: %s\n", what, strerror(errno));
	exit(1);
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long cpu_ns(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ((long long)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
	       ((long long)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
}

// read_full reads exactly n bytes; returns 0 at a clean EOF before any.
static int read_full(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("read");
		if (r == 0) {
			if (got == 0)
				return 0;
			fprintf(stderr, "reqstorm: connection closed mid-message\n");
			exit(1);
		}
		got += r;
	}
	return 1;
}

static void write_full(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die("write");
		buf += w;
		n -= w;
	}
}

static int listener;

// serve_thread accepts connections and serves each until the client closes:
// DEPTH requests read (fixed size: the client sends only `request`), then
// DEPTH responses, each its own write.
static void *serve_thread(void *arg)
{
	(void)arg;
	char buf[REQ_LEN * MAX_DEPTH];
	for (;;) {
		int fd = accept(listener, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		while (read_full(fd, buf, REQ_LEN * depth))
			for (int i = 0; i < depth; i++)
				write_full(fd, response, RESP_LEN);
		close(fd);
	}
	return NULL;
}

static int serve(int threads)
{
	listener = socket(AF_INET, SOCK_STREAM, 0);
	if (listener < 0)
		die("socket");
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(listener, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	if (listen(listener, 1024) < 0)
		die("listen");
	socklen_t len = sizeof(a);
	if (getsockname(listener, (struct sockaddr *)&a, &len) < 0)
		die("getsockname");
	for (int i = 0; i < threads; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, serve_thread, NULL))
			die("pthread_create");
	}
	printf("ready %d port=%d\n", getpid(), ntohs(a.sin_port));
	fflush(stdout);
	// Until stdin closes (the harness ends the server) or a signal.
	char c;
	while (read(0, &c, 1) > 0)
		;
	return 0;
}

static int port;
static long rate; // requests per second in all, 0: unpaced
static int nconns;

// client_thread sends *(long *)arg requests on one connection.
static void *client_thread(void *arg)
{
	long n = *(long *)arg;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	char out[REQ_LEN * MAX_DEPTH];
	char in[RESP_LEN * MAX_DEPTH];
	for (int i = 0; i < depth; i++)
		memcpy(out + i * REQ_LEN, request, REQ_LEN);
	// Paced: at every tick (1 ms) the connection sends the requests due
	// since its start at rate / nconns per second, then sleeps.
	long long start = now_ns();
	struct timespec tick;
	clock_gettime(CLOCK_MONOTONIC, &tick);
	for (long i = 0; i < n; i += depth) {
		if (rate > 0) {
			long due;
			while ((due = (long)((now_ns() - start) * (double)rate / nconns / 1e9)) < i) {
				tick.tv_nsec += 1000000;
				if (tick.tv_nsec >= 1000000000) {
					tick.tv_sec++;
					tick.tv_nsec -= 1000000000;
				}
				clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
			}
		}
		write_full(fd, out, REQ_LEN * depth);
		if (!read_full(fd, in, RESP_LEN * depth)) {
			fprintf(stderr, "reqstorm: server closed the connection\n");
			exit(1);
		}
	}
	close(fd);
	return NULL;
}

static int client(int conns, long requests)
{
	pthread_t t[conns];
	long per[conns];
	// Whole pipelined batches per connection: the total is rounded down.
	long batches = requests / depth;
	long total = 0;
	for (int i = 0; i < conns; i++) {
		per[i] = (batches / conns + (i < batches % conns)) * depth;
		total += per[i];
	}
	long long c0 = cpu_ns(), t0 = now_ns();
	for (int i = 0; i < conns; i++)
		if (pthread_create(&t[i], NULL, client_thread, &per[i]))
			die("pthread_create");
	for (int i = 0; i < conns; i++)
		pthread_join(t[i], NULL);
	long long el = now_ns() - t0, cpu = cpu_ns() - c0;
	printf("result mode=client requests=%ld conns=%d depth=%d rate=%ld elapsed_ns=%lld requests_per_sec=%.0f cpu_ns=%lld\n",
	       total, conns, depth, rate, el, total * 1e9 / el, cpu);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2 || (strcmp(argv[1], "serve") && strcmp(argv[1], "client"))) {
		fprintf(stderr, "usage: reqstorm serve [-t THREADS] [-k DEPTH] | client -p PORT [-c CONNS] [-n REQUESTS] [-k DEPTH] [-r RATE]\n");
		return 2;
	}
	int threads = 4, conns = 4;
	long requests = 200000;
	int opt;
	optind = 2;
	while ((opt = getopt(argc, argv, "t:k:p:c:n:r:")) != -1) {
		switch (opt) {
		case 't': threads = atoi(optarg); break;
		case 'k': depth = atoi(optarg); break;
		case 'p': port = atoi(optarg); break;
		case 'c': conns = atoi(optarg); break;
		case 'n': requests = atol(optarg); break;
		case 'r': rate = atol(optarg); break;
		default: return 2;
		}
	}
	if (depth < 1 || depth > MAX_DEPTH || threads < 1 || conns < 1 || requests < 1 || rate < 0) {
		fprintf(stderr, "reqstorm: -k is 1 to %d; -t, -c and -n at least 1; -r at least 0\n", MAX_DEPTH);
		return 2;
	}
	if (!strcmp(argv[1], "serve"))
		return serve(threads);
	nconns = conns;
	if (port <= 0) {
		fprintf(stderr, "reqstorm: client needs -p PORT\n");
		return 2;
	}
	return client(conns, requests);
}
