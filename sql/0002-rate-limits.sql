-- Rate-limit counters: one row per subject (an API key id, or "jwt:<sub>")
-- and fixed window.  UNLOGGED: these writes skip the WAL, so counting a
-- request costs no log flush; after a PostgreSQL crash the table comes back
-- empty, which only forgives the current window.
CREATE UNLOGGED TABLE rate_counters (
    subject      text NOT NULL,
    window_start bigint NOT NULL,       -- s since the epoch
    count        integer NOT NULL,
    PRIMARY KEY (subject, window_start)
);
