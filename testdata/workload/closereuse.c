// closereuse: a blocking HTTP server for tracer's TestClosedOpEndsBeforeReusedFD.
// It listens on 127.0.0.1 (a free port), prints "ready <pid> port=<port>",
// waits for a line on stdin (the test traces it meanwhile), then twice:
// accepts a connection, reads one request and closes the connection without
// answering. The close comes from the op's own thread while it still serves
// the request, and the second accept reuses the first connection's fd with
// no poll in between: its request begins an op on that fd while the first
// op's end is still owed. Exits after the second connection.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 4) ||
	    getsockname(ls, (struct sockaddr *)&a, &alen)) {
		perror("closereuse: listen");
		return 1;
	}
	printf("ready %d port=%d\n", getpid(), ntohs(a.sin_port));
	fflush(stdout);
	char buf[512];
	if (!fgets(buf, sizeof(buf), stdin))
		return 1;
	for (int i = 0; i < 2; i++) {
		int c = accept(ls, NULL, NULL);
		if (c < 0) {
			perror("closereuse: accept");
			return 1;
		}
		if (read(c, buf, sizeof(buf)) <= 0) {
			perror("closereuse: read");
			return 1;
		}
		printf("fd %d\n", c);
		fflush(stdout);
		close(c);
	}
	return 0;
}
