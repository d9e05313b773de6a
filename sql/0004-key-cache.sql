-- Workers keep verified keys, and tenants' sealed provider keys, in
-- memory.  Every change that can alter what a key may do, or which provider
-- key a tenant has, is announced on the channel keygate_cache when its
-- transaction commits, to every keygated on every host, with what it
-- touched: "k:<key id>", "r:<role id>", "t:<tenant id>", "v:<tenant id>"
-- (its provider keys) or "*" (a table emptied).  Workers drop just that.
-- A column added to api_keys is covered without touching this file: only
-- last_used_at and updated_at, written for bookkeeping, are ignored.
CREATE FUNCTION keygate_cache_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    what text := '*';
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        CASE TG_TABLE_NAME
        WHEN 'api_keys' THEN
            what := 'k:' || CASE TG_OP WHEN 'DELETE' THEN OLD.id ELSE NEW.id END;
        WHEN 'roles' THEN
            what := 'r:' || CASE TG_OP WHEN 'DELETE' THEN OLD.id ELSE NEW.id END;
        WHEN 'tenants' THEN
            what := 't:' || CASE TG_OP WHEN 'DELETE' THEN OLD.id ELSE NEW.id END;
        WHEN 'llm_keys' THEN
            what := 'v:' || CASE TG_OP WHEN 'DELETE' THEN OLD.tenant_id
                                       ELSE NEW.tenant_id END;
        ELSE
            what := '*';
        END CASE;
    END IF;
    PERFORM pg_notify('keygate_cache', what);
    -- A row moved by hand to another id or tenant: the old one too.
    IF TG_OP = 'UPDATE' THEN
        IF TG_TABLE_NAME = 'llm_keys' THEN
            IF OLD.tenant_id IS DISTINCT FROM NEW.tenant_id THEN
                PERFORM pg_notify('keygate_cache', 'v:' || OLD.tenant_id);
            END IF;
        ELSIF OLD.id IS DISTINCT FROM NEW.id THEN
            PERFORM pg_notify('keygate_cache', left(what, 2) || OLD.id);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_cache_changed
    AFTER UPDATE ON api_keys FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'last_used_at' - 'updated_at') IS DISTINCT FROM
          (to_jsonb(NEW) - 'last_used_at' - 'updated_at'))
    EXECUTE FUNCTION keygate_cache_changed();
CREATE TRIGGER api_keys_cache_removed
    AFTER DELETE ON api_keys FOR EACH ROW
    EXECUTE FUNCTION keygate_cache_changed();
CREATE TRIGGER api_keys_cache_truncated
    AFTER TRUNCATE ON api_keys FOR EACH STATEMENT
    EXECUTE FUNCTION keygate_cache_changed();

-- A role's scopes are its keys' scopes.
CREATE TRIGGER roles_cache_changed
    AFTER UPDATE ON roles FOR EACH ROW
    WHEN (OLD.scopes IS DISTINCT FROM NEW.scopes)
    EXECUTE FUNCTION keygate_cache_changed();
CREATE TRIGGER roles_cache_removed
    AFTER DELETE ON roles FOR EACH ROW
    EXECUTE FUNCTION keygate_cache_changed();
CREATE TRIGGER roles_cache_truncated
    AFTER TRUNCATE ON roles FOR EACH STATEMENT
    EXECUTE FUNCTION keygate_cache_changed();

-- A tenant's keys work only while it is active.
CREATE TRIGGER tenants_cache_changed
    AFTER UPDATE ON tenants FOR EACH ROW
    WHEN (OLD.active IS DISTINCT FROM NEW.active)
    EXECUTE FUNCTION keygate_cache_changed();
CREATE TRIGGER tenants_cache_removed
    AFTER DELETE ON tenants FOR EACH ROW
    EXECUTE FUNCTION keygate_cache_changed();
CREATE TRIGGER tenants_cache_truncated
    AFTER TRUNCATE ON tenants FOR EACH STATEMENT
    EXECUTE FUNCTION keygate_cache_changed();

-- Provider keys stored, replaced, re-encrypted or deleted.  Row by row, so
-- that a statement that changes nothing empties no cache; notifications of
-- one transaction are folded into one.
CREATE TRIGGER llm_keys_cache_changed
    AFTER INSERT OR UPDATE OR DELETE ON llm_keys FOR EACH ROW
    EXECUTE FUNCTION keygate_cache_changed();
CREATE TRIGGER llm_keys_cache_truncated
    AFTER TRUNCATE ON llm_keys FOR EACH STATEMENT
    EXECUTE FUNCTION keygate_cache_changed();

-- Rate limits: each keygated takes requests from a window's counter in
-- blocks and spends them from memory its workers share.  granted is what
-- the last statement took, so that it can be returned.
ALTER TABLE rate_counters ADD COLUMN granted integer NOT NULL DEFAULT 0;
