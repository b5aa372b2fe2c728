// regionops: the traced process of tracer's TestRegionTableMatchesModel. It
// runs mmap, munmap, mprotect and mremap as told on stdin, one per line, and answers
// each with "ok <result>" or "err <errno>". Single-threaded and without
// malloc (static stdio buffers), so no mapping but the ones it is told to
// make appears in its address space while it runs.
//
//   reserve LEN            mmap(NULL, LEN, PROT_NONE, private anonymous, noreserve)
//   map ADDR LEN PROT      mmap(ADDR, LEN, PROT, private anonymous, MAP_FIXED)
//   unmap ADDR LEN         munmap(ADDR, LEN)
//   protect ADDR LEN PROT  mprotect(ADDR, LEN, PROT)
//   remap ADDR LEN NEWLEN  mremap(ADDR, LEN, NEWLEN, 0): in place
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static char inbuf[4096], outbuf[4096], line[256];

int main(void)
{
	setvbuf(stdin, inbuf, _IOFBF, sizeof(inbuf));
	setvbuf(stdout, outbuf, _IOLBF, sizeof(outbuf));
	while (fgets(line, sizeof(line), stdin)) {
		char op[16];
		unsigned long a = 0, b = 0, c = 0;
		if (sscanf(line, "%15s %li %li %li", op, &a, &b, &c) < 2) {
			printf("err %d\n", EINVAL);
			continue;
		}
		long r;
		if (!strcmp(op, "reserve")) {
			void *p = mmap(NULL, a, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			r = p == MAP_FAILED ? -1 : (long)p;
		} else if (!strcmp(op, "map")) {
			void *p = mmap((void *)a, b, (int)c, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
			r = p == MAP_FAILED ? -1 : (long)p;
		} else if (!strcmp(op, "unmap")) {
			r = munmap((void *)a, b);
		} else if (!strcmp(op, "protect")) {
			r = mprotect((void *)a, b, (int)c);
		} else if (!strcmp(op, "remap")) {
			void *p = mremap((void *)a, b, c, 0); /* in place: shrink, or grow into a hole */
			r = p == MAP_FAILED ? -1 : (long)p;
		} else {
			errno = EINVAL;
			r = -1;
		}
		if (r == -1)
			printf("err %d\n", errno);
		else
			printf("ok %#lx\n", (unsigned long)r);
	}
	return 0;
}
