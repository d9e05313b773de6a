/*
 * libFuzzer harness for src/server/config.c: any bytes as keygate.conf.
 * Loading either gives a configuration that passed its checks or refuses
 * with a reason, never a memory error; a configuration loaded is freed
 * whole.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "server/config.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config	*c;
	char		 path[64], err[512];
	int		 fd;

	if ((fd = memfd_create("keygate.conf", 0)) == -1)
		abort();
	if (size > 0 && write(fd, data, size) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	err[0] = '\0';
	if ((c = config_load(path, err, sizeof(err))) != NULL) {
		if (config_workers(c) < 1)
			abort();
		config_free(c);
	} else if (err[0] == '\0')
		abort();	/* a refusal always says why */
	close(fd);
	return 0;
}
