-- keygate's schema: tenants, roles, API keys, the audit log, the vault,
-- credits, prices and usage.  Applied by `keygatectl migrate` in one
-- transaction; never edit an applied migration, add the next number.
--
-- Money is counted in micro-credits (1 credit = 1 000 000) in bigint so
-- that every sum is exact.

-- Tenants form a tree.  path holds the ids from the root down to the
-- tenant itself, so "X is in T's subtree" is `T = ANY(X.path)`, answered
-- by the GIN index, and names never take part in it.
CREATE TABLE tenants (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    parent_id        uuid REFERENCES tenants (id),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    path             uuid[] NOT NULL,
    active           boolean NOT NULL DEFAULT true,
    credits_balance  bigint NOT NULL DEFAULT 0 CHECK (credits_balance >= 0),
    credits_reserved bigint NOT NULL DEFAULT 0 CHECK (credits_reserved >= 0),
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (path[cardinality(path)] = id),
    CHECK ((parent_id IS NULL) = (cardinality(path) = 1))
);
CREATE INDEX tenants_path_idx ON tenants USING gin (path);
CREATE INDEX tenants_parent_idx ON tenants (parent_id);

INSERT INTO tenants (id, parent_id, name, path)
VALUES ('00000000-0000-0000-0000-000000000001', NULL, 'root',
        ARRAY['00000000-0000-0000-0000-000000000001']::uuid[]);

-- Named scope bundles.  tenant_id NULL = global (the built-in ones).
CREATE TABLE roles (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid REFERENCES tenants (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '',
    scopes      text[] NOT NULL DEFAULT '{}',
    builtin     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX roles_name_idx
    ON roles (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'), name);

INSERT INTO roles (name, description, scopes, builtin) VALUES
  ('reader', 'Read everything the key can reach',
   ARRAY['api_keys:read', 'roles:read', 'tenants:read', 'llm_keys:read',
         'models:read', 'account:read', 'audit:read'], true),
  ('writer', 'reader, plus chat and managing keys',
   ARRAY['api_keys:read', 'roles:read', 'tenants:read', 'llm_keys:read',
         'models:read', 'account:read', 'audit:read',
         'chat:write', 'llm_keys:write', 'api_keys:write'], true),
  ('admin', 'Everything', ARRAY['*'], true);

-- API keys.  Only the lookup prefix (brand, env and the first 8 random
-- characters) and HMAC-SHA256(hmac_secret, key) are kept, never the key.
-- During a rotation's grace period the previous secret's prefix and hash
-- stay valid until prev_expires_at.
CREATE TABLE api_keys (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    name              text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    env               text NOT NULL DEFAULT 'live' CHECK (env IN ('live', 'test', 'dev')),
    key_prefix        text NOT NULL UNIQUE,
    key_hash          bytea NOT NULL CHECK (length(key_hash) = 32),
    last4             text NOT NULL,
    scopes            text[] NOT NULL DEFAULT '{}',
    role_id           uuid REFERENCES roles (id),
    expires_at        timestamptz,
    revoked_at        timestamptz,
    disabled_at       timestamptz,
    rate_limit_max    integer CHECK (rate_limit_max BETWEEN 1 AND 100000),
    rate_limit_window integer CHECK (rate_limit_window > 0),
    prev_key_prefix   text UNIQUE,
    prev_key_hash     bytea,
    prev_expires_at   timestamptz,
    last_used_at      timestamptz,
    created_by        uuid,
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at, id);
CREATE INDEX api_keys_role_idx ON api_keys (role_id);

-- The audit log: append-only and hash-chained.  Each row's hash covers the
-- previous row's hash and its own contents, so an edited, removed or
-- reordered row breaks the chain (`keygatectl audit-verify`).  Ids are
-- drawn inside the insert trigger, under a lock, so id order is chain order.
CREATE TABLE audit_log (
    id           bigint PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    tenant_id    uuid,
    actor_key_id uuid,
    actor        text NOT NULL DEFAULT '',
    action       text NOT NULL,
    target_type  text NOT NULL DEFAULT '',
    target_id    text NOT NULL DEFAULT '',
    request_id   text NOT NULL DEFAULT '',
    client_addr  text NOT NULL DEFAULT '',
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash    bytea NOT NULL,
    row_hash     bytea NOT NULL
);
CREATE SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, id);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_key_id, id);
CREATE INDEX audit_log_target_idx ON audit_log (target_id, id);
CREATE INDEX audit_log_created_idx ON audit_log (created_at, id);

CREATE FUNCTION audit_row_hash(prev bytea, r audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(prev || convert_to(concat_ws(E'\x1f',
        r.id::text, to_char(r.created_at AT TIME ZONE 'UTC',
                            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        coalesce(r.tenant_id::text, ''), coalesce(r.actor_key_id::text, ''),
        r.actor, r.action, r.target_type, r.target_id, r.request_id,
        r.client_addr, r.details::text), 'UTF8'))
$$;

CREATE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last bytea;
BEGIN
    -- One writer at a time, held to commit: the chain has no forks.
    PERFORM pg_advisory_xact_lock(7283002);
    NEW.id := nextval('audit_log_id_seq');
    SELECT row_hash INTO last FROM audit_log ORDER BY id DESC LIMIT 1;
    NEW.prev_hash := coalesce(last, '\x'::bytea);
    NEW.row_hash := audit_row_hash(NEW.prev_hash, NEW);
    RETURN NEW;
END
$$;

CREATE FUNCTION audit_log_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only'
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_chain();
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();

-- The vault: one encrypted provider key per tenant and provider, stored as
-- v1:<iv_hex>:<tag_hex>:<ciphertext_hex> under the keyring key master_key_id.
CREATE TABLE llm_keys (
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    provider          text NOT NULL CHECK (provider IN ('openai', 'anthropic', 'google', 'openrouter')),
    ciphertext        text NOT NULL CHECK (ciphertext LIKE 'v1:%'),
    master_key_id     text NOT NULL,
    last_validated_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider)
);

-- Prices per model or pattern ('gpt-4o', 'claude-*', '*'), in micro-credits
-- per million tokens.  The longest matching pattern wins.
CREATE TABLE prices (
    pattern            text PRIMARY KEY,
    input_per_mtok     bigint NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok    bigint NOT NULL CHECK (output_per_mtok >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Credits held for requests in flight; settled into usage or released.
CREATE TABLE credit_reservations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    api_key_id  uuid,
    request_id  text NOT NULL UNIQUE,
    amount      bigint NOT NULL CHECK (amount >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_reservations_tenant_idx ON credit_reservations (tenant_id);

-- Exactly one row per completed gateway request.
CREATE TABLE usage (
    id                bigserial PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    api_key_id        uuid,
    request_id        text NOT NULL UNIQUE,
    provider          text NOT NULL,
    model             text NOT NULL,
    key_source        text NOT NULL CHECK (key_source IN ('user', 'pool')),
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    credits_charged   bigint NOT NULL DEFAULT 0 CHECK (credits_charged >= 0),
    markup            numeric(8, 4),
    status            text NOT NULL DEFAULT 'ok',
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_tenant_idx ON usage (tenant_id, created_at, id);
