-- Credits leased per host.  With credits_lease on, a keygated holds a
-- slice of a busy tenant's balance as one credit_reservations row (a
-- lease, request_id 'lease', owned by the master process) and its workers
-- hold each call's estimate from it in shared memory.  A call's usage row
-- names its lease, and the lease's charge row is written in the same
-- transaction as the usage rows it sums; reservation_id stays the call's
-- own id, so a usage row written twice is still one row.
ALTER TABLE usage ADD COLUMN lease_id uuid;

-- What a call cost beyond what could be charged (the balance, or the
-- lease, ran out before its usage was known): forgiven, and recorded so
-- that the operator sees it.  Its usage row's cost is charged + forgiven.
ALTER TABLE usage ADD COLUMN credits_forgiven bigint NOT NULL DEFAULT 0
    CHECK (credits_forgiven >= 0);

-- Workers keep prices in memory: a change of them is announced like a
-- change of keys (keygate_cache, "$").
CREATE FUNCTION keygate_prices_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keygate_cache', '$');
    RETURN NULL;
END
$$;

CREATE TRIGGER prices_cache_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION keygate_prices_changed();
