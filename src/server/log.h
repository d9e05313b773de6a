#ifndef KEYGATE_SERVER_LOG_H
#define KEYGATE_SERVER_LOG_H

#include <stdarg.h>

enum log_level {
	LOG_DEBUG,
	LOG_INFO,
	LOG_WARN,
	LOG_ERROR,
	LOG__MAX
};

struct log_request {
	const char	*request_id;
	const char	*method;
	const char	*path;		/* without the query string */
	int		 status;
	double		 latency_ms;
	const char	*key_id;	/* NULL when unauthenticated */
};

/*
 * Where log lines go: path NULL or "" means stderr.  Opens the file in
 * append mode (created 0640).  Returns 0, or -1 with errno set and the old
 * destination kept.  The master calls it at start and on SIGHUP; workers
 * inherit the descriptor.
 */
int	log_open(const char *path) __attribute__((warn_unused_result));
/* Closes a log file (stderr is left alone). */
void	log_close(void);
/*
 * Writes one JSON line {"ts","level","pid","msg"}.  Never pass a secret.
 * Lines are written with a single write(2) so that processes sharing the
 * descriptor do not interleave.
 */
void	log_msg(enum log_level, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
void	log_vmsg(enum log_level, const char *, va_list)
	    __attribute__((format(printf, 2, 0)));
/* Writes one access-log line for a finished request. */
void	log_access(const struct log_request *);

#define log_info(...)	log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)	log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...)	log_msg(LOG_ERROR, __VA_ARGS__)

extern const char *const log_level_names[LOG__MAX];

#endif
