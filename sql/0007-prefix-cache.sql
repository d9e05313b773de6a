-- Workers also remember the lookup prefixes that no key has, so that a
-- flood of well-formed made-up keys (the checksum is public) costs no
-- query after the first.  A key that takes a prefix, when it is created or
-- rotated, announces it on keygate_cache as "p:<prefix>", and workers
-- forget that the prefix was unknown.
CREATE FUNCTION keygate_cache_prefix() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keygate_cache', 'p:' || NEW.key_prefix);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_cache_inserted
    AFTER INSERT ON api_keys FOR EACH ROW
    EXECUTE FUNCTION keygate_cache_prefix();
CREATE TRIGGER api_keys_cache_prefix
    AFTER UPDATE OF key_prefix ON api_keys FOR EACH ROW
    WHEN (OLD.key_prefix IS DISTINCT FROM NEW.key_prefix)
    EXECUTE FUNCTION keygate_cache_prefix();
