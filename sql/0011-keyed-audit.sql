-- The audit chain, keyed.  Until now each row's hash was SHA-256 over the
-- previous hash and the row, so whoever could write the table could
-- rewrite a row and every hash after it.  From here on it is HMAC-SHA256
-- under a key derived from hmac_secret, which the database never stores:
-- keygated and keygatectl give it to each of their sessions as the
-- setting keygate.audit_key (the HMAC's inner and outer padded keys, hex,
-- so that sha256() is all PostgreSQL needs).  A session without it cannot
-- append a row, and a row written without it does not verify.

-- The bytes a row's hash covers, besides the previous hash.
CREATE FUNCTION audit_row_text(r audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog
AS $$
    SELECT convert_to(concat_ws(E'\x1f',
        r.id::text, to_char(r.created_at AT TIME ZONE 'UTC',
                            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        coalesce(r.tenant_id::text, ''), coalesce(r.actor_key_id::text, ''),
        r.actor, r.action, r.target_type, r.target_id, r.request_id,
        r.client_addr, r.details::text), 'UTF8')
$$;

CREATE OR REPLACE FUNCTION audit_row_hash(prev bytea, r audit_log)
RETURNS bytea
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    k bytea;
BEGIN
    k := decode(coalesce(current_setting('keygate.audit_key', true), ''),
                'hex');
    IF length(k) <> 128 THEN
        RAISE EXCEPTION 'audit_log: this session has no audit key '
            '(keygate.audit_key): only keygated and keygatectl write or '
            'verify the audit log'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN sha256(substr(k, 65, 64) ||
                  sha256(substr(k, 1, 64) || prev || audit_row_text(r)));
END
$$;

-- The functions the chain depends on resolve names in the system catalog
-- first, then in keygate's own schema: nothing another schema defines
-- can stand in for them.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION audit_row_hash(bytea, audit_log) '
                   'SET search_path = pg_catalog, %I', current_schema());
    EXECUTE format('ALTER FUNCTION audit_log_chain() '
                   'SET search_path = pg_catalog, %I', current_schema());
END
$$;

-- The rows written so far are re-keyed, once their plain chain is checked:
-- a log that is already broken is not laundered into a keyed one.
DO $$
DECLARE
    bad  bigint;
    r    audit_log;
    last bytea := '\x'::bytea;
BEGIN
    SELECT id INTO bad FROM (
        SELECT id,
               prev_hash = coalesce(lag(row_hash) OVER (ORDER BY id),
                                    '\x'::bytea) AS link_ok,
               row_hash = sha256(prev_hash || audit_row_text(a)) AS row_ok
        FROM audit_log a) c
    WHERE NOT link_ok OR NOT row_ok ORDER BY id LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'the audit log is broken at row % (edited, or a '
            'row before it removed or reordered): it is not re-keyed', bad;
    END IF;
    ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
    FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
        UPDATE audit_log SET prev_hash = last,
            row_hash = audit_row_hash(last, r)
            WHERE id = r.id RETURNING row_hash INTO last;
    END LOOP;
    ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update;
END
$$;
