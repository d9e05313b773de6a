#ifndef KEYGATE_LIB_CLOCK_H
#define KEYGATE_LIB_CLOCK_H

/* Seconds on the monotonic clock: for intervals and deadlines only. */
double	clock_mono(void);

#endif
