#include "autoconfig.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lib/harden.h"

int
harden_process(char *err, size_t errsz)
{
	struct rlimit	 none = { 0, 0 };

	if (setrlimit(RLIMIT_CORE, &none) == -1) {
		snprintf(err, errsz, "setrlimit: RLIMIT_CORE: %s",
		    strerror(errno));
		return -1;
	}
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1) {
		snprintf(err, errsz, "prctl: PR_SET_DUMPABLE: %s",
		    strerror(errno));
		return -1;
	}
	return 0;
}

int
harden_lock(const void *p, size_t n)
{
	long		 page = sysconf(_SC_PAGESIZE);
	uintptr_t	 start, end;

	if (p == NULL || n == 0)
		return 0;
	if (page <= 0)
		page = 4096;
	start = (uintptr_t)p & ~((uintptr_t)page - 1);
	end = (uintptr_t)p + n;
	/*
	 * The system call itself: AddressSanitizer replaces mlock() with a
	 * no-op, and a sanitizer build must keep its secrets out of swap
	 * like any other.
	 */
	return (int)syscall(SYS_mlock, (const void *)start, end - start);
}
