#ifndef KEYGATE_LIB_BUF_H
#define KEYGATE_LIB_BUF_H

#include <stdarg.h>
#include <stddef.h>

/*
 * A growable byte buffer.  The contents are always NUL-terminated (the NUL
 * is not counted in len), so a buffer of text can be handed to C string
 * functions directly.  A zeroed struct is an empty buffer; buf_free() on it
 * is a no-op.
 */
struct buf {
	char	*data;	/* owned; NULL until the first append */
	size_t	 len;	/* bytes used, excluding the trailing NUL */
	size_t	 cap;	/* bytes allocated */
};

/* Appends n bytes; returns 0, or -1 when memory runs out (buf unchanged). */
int	buf_append(struct buf *, const void *, size_t)
	    __attribute__((warn_unused_result));
/* Appends a C string; 0 or -1 as buf_append(). */
int	buf_puts(struct buf *, const char *)
	    __attribute__((warn_unused_result));
/* Appends printf-formatted text; 0 or -1. */
int	buf_printf(struct buf *, const char *, ...)
	    __attribute__((format(printf, 2, 3), warn_unused_result));
int	buf_vprintf(struct buf *, const char *, va_list)
	    __attribute__((format(printf, 2, 0), warn_unused_result));
/* Appends s as the body of a JSON string (escaped, without quotes). */
int	buf_json_escape(struct buf *, const char *, size_t)
	    __attribute__((warn_unused_result));
/*
 * The same for text that must come out as UTF-8 whatever came in (a
 * client's path in the access log): each byte that starts no valid
 * sequence becomes \ufffd.
 */
int	buf_json_escape_text(struct buf *, const char *, size_t)
	    __attribute__((warn_unused_result));
/* Forgets the contents but keeps the allocation for reuse. */
void	buf_reset(struct buf *);
/* Releases the memory; the buffer is empty and reusable afterwards. */
void	buf_free(struct buf *);
/* As buf_free(), but wipes the bytes first: for buffers that held secrets. */
void	buf_free_secret(struct buf *);

#endif
