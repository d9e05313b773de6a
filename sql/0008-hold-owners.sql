-- Every credit hold names the process that holds it (host name and pid)
-- and a deadline after which no call can still be running (the upstream
-- total timeout and a margin).  A hold whose process died, or whose
-- deadline passed, is released by a surviving worker within seconds, so a
-- keygated killed with calls in flight cannot lock a tenant's credits.
ALTER TABLE credit_reservations
    ADD COLUMN owner_host text NOT NULL DEFAULT '',
    ADD COLUMN owner_pid  integer NOT NULL DEFAULT 0,
    ADD COLUMN deadline   timestamptz NOT NULL
        DEFAULT now() + interval '1 hour';
CREATE INDEX credit_reservations_owner_idx
    ON credit_reservations (owner_host, owner_pid);
CREATE INDEX credit_reservations_deadline_idx
    ON credit_reservations (deadline);

-- A settlement names the hold it settled, once: sent again after a lost
-- connection, it finds its own usage row instead of charging twice.
ALTER TABLE usage ADD COLUMN reservation_id uuid UNIQUE;
