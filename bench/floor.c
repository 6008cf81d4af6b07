/*
 * The physical floor of a spool-only submission, for `make bench`.
 *
 *   floor        exits at once (exec + dynamic loading only)
 *   floor DIR    reads standard input (up to 64 KiB), writes it to
 *                DIR/tmp.PID, fsync()s it, rename()s it to DIR/msg.PID and
 *                fsync()s DIR: what any durable spool has to do.
 *
 * bench/run links it twice: against the libraries relayq links
 * (-lesmtp -lssl -lcrypto -liniparser, with --no-as-needed so that they
 * really are loaded) as floor-linked, and against libc alone as floor-bare.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	static char buf[65536];
	char tmp[4096], dst[4096];
	size_t len = 0;
	ssize_t n;
	int fd, dfd;

	if (argc < 2)
		return 0;
	while (len < sizeof buf &&
	       (n = read(0, buf + len, sizeof buf - len)) > 0)
		len += (size_t)n;
	snprintf(tmp, sizeof tmp, "%s/tmp.%ld", argv[1], (long)getpid());
	snprintf(dst, sizeof dst, "%s/msg.%ld", argv[1], (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, buf, len) != (ssize_t)len || fsync(fd) != 0 ||
	    close(fd) != 0 || rename(tmp, dst) != 0) {
		perror("floor");
		return 1;
	}
	dfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) != 0) {
		perror("floor");
		return 1;
	}
	close(dfd);
	return 0;
}
