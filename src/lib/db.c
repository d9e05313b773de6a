#include "autoconfig.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "lib/clock.h"
#include "lib/db.h"

const char *const db_status_names[DB_STATUS__MAX] = {
	"ok",		/* DB_OK */
	"unavailable",	/* DB_UNAVAILABLE */
	"error",	/* DB_ERROR */
};

/* Timestamps leave the database as ISO 8601 in UTC. */
#define TS(c) DB_TS(c)

/* A key as the API shows it; the column order is enum key_col. */
#define KEY_COLS DB_KEY_COLUMNS(DB_COLS_SQL)
#define KEY_FROM \
	"FROM api_keys k JOIN tenants t ON t.id = k.tenant_id " \
	"LEFT JOIN roles r ON r.id = k.role_id "

/* A tenant as the API shows it; the column order is enum tenant_col. */
#define TENANT_COLS DB_TENANT_COLUMNS(DB_COLS_SQL)

/* A role as the API shows it; the column order is enum role_col. */
#define ROLE_COLS DB_ROLE_COLUMNS(DB_COLS_SQL)
/* Roles a caller sees: global ones, and those of its subtree. */
#define ROLE_VISIBLE(caller) \
	"(r.tenant_id IS NULL OR EXISTS (SELECT 1 FROM tenants rt WHERE " \
	"rt.id = r.tenant_id AND " caller " = ANY(rt.path))) "
/* Roles a caller may change: not built in, and in its subtree. */
#define ROLE_MINE(caller) \
	"(NOT r.builtin AND EXISTS (SELECT 1 FROM tenants rt WHERE " \
	"rt.id = r.tenant_id AND " caller " = ANY(rt.path))) "

/*
 * Every statement keygate sends.  Parameters are always bound: no value
 * from a request is ever spliced into SQL text.
 */
static const struct {
	const char	*name;
	/*
	 * How many parameters sql takes: $1 to $nparams, each at least once
	 * (tests/unit/lib/test_db.c counts them).
	 */
	int		 nparams;
	const char	*sql;
	/*
	 * Never sent twice: the statement changes something on its own and
	 * a connection lost after it ran could have committed it.
	 */
	bool		 once;
} stmts[STMT__MAX] = {
	[STMT_SCHEMA_VERSION] = { "schema_version", 0,
	  "SELECT coalesce(max(version), 0) FROM schema_migrations" },
	[STMT_MIGRATION_APPLIED] = { "migration_applied", 1,
	  "SELECT 1 FROM schema_migrations WHERE version = $1::int" },
	[STMT_MIGRATION_RECORD] = { "migration_record", 2,
	  "INSERT INTO schema_migrations (version, name) "
	  "VALUES ($1::int, $2)" },
	[STMT_SET_LOCAL] = { "set_local", 2,
	  "SELECT pg_catalog.set_config($1, $2, true)" },
	[STMT_TENANT_EXISTS] = { "tenant_exists", 1,
	  "SELECT 1 FROM tenants WHERE id = $1::uuid AND active" },
	[STMT_KEY_INSERT] = { "key_insert", 12,
	  "INSERT INTO api_keys (tenant_id, name, env, key_prefix, key_hash, "
	  "last4, scopes, role_id, expires_at, rate_limit_max, "
	  "rate_limit_window, created_by) VALUES ($1::uuid, $2, $3, $4, "
	  "decode($5, 'hex'), $6, $7::text[], $8::uuid, $9::timestamptz, "
	  "$10::int, $11::int, $12::uuid) "
	  "RETURNING id, to_char(created_at AT TIME ZONE 'UTC', "
	  "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')" },
	[STMT_AUDIT_INSERT] = { "audit_insert", 9,
	  "INSERT INTO audit_log (tenant_id, actor_key_id, actor, action, "
	  "target_type, target_id, request_id, client_addr, details) VALUES "
	  "($1::uuid, $2::uuid, $3, $4, $5, $6, $7, $8, $9::jsonb)" },
	[STMT_KEY_LOOKUP] = { "key_lookup", 1,
	  "SELECT k.id, k.tenant_id, encode(CASE WHEN k.key_prefix = $1 "
	  "THEN k.key_hash ELSE k.prev_key_hash END, 'hex'), "
	  "(k.revoked_at IS NULL AND k.disabled_at IS NULL AND "
	  "(k.expires_at IS NULL OR k.expires_at > now()) AND t.active AND "
	  "(k.key_prefix = $1 OR k.prev_expires_at > now())), "
	  "array_to_string(coalesce(r.scopes, k.scopes), ','), "
	  "coalesce(k.rate_limit_max, 0), coalesce(k.rate_limit_window, 0), "
	  "k.env, k.key_prefix, (k.last_used_at IS NULL OR "
	  "k.last_used_at < now() - interval '1 minute'), "
	  "coalesce(k.role_id::text, ''), "
	  "coalesce(floor(extract(epoch FROM least(k.expires_at, CASE WHEN "
	  "k.key_prefix = $1 THEN NULL ELSE k.prev_expires_at END)))::text, "
	  "'') "
	  KEY_FROM
	  "WHERE k.key_prefix = $1 OR k.prev_key_prefix = $1" },
	[STMT_KEY_TOUCH] = { "key_touch", 1,
	  "UPDATE api_keys SET last_used_at = now() "
	  "WHERE id = ANY($1::uuid[]) AND (last_used_at IS NULL OR "
	  "last_used_at < now() - interval '1 minute')" },
	[STMT_TENANT_IN_SUBTREE] = { "tenant_in_subtree", 2,
	  "SELECT 1 FROM tenants WHERE id = $1::uuid AND $2::uuid = ANY(path)" },
	[STMT_TENANT_LOCK] = { "tenant_lock", 1,
	  "SELECT 1 FROM tenants WHERE id = $1::uuid FOR UPDATE" },
	[STMT_KEY_COUNT_ACTIVE] = { "key_count_active", 1,
	  "SELECT count(*) FROM api_keys WHERE tenant_id = $1::uuid AND "
	  "revoked_at IS NULL AND disabled_at IS NULL AND "
	  "(expires_at IS NULL OR expires_at > now())" },
	/*
	 * A role a key of tenant $2 may take, as caller $3 sees it: global,
	 * or of a tenant on $2's path that is also in $3's subtree.
	 */
	[STMT_ROLE_SCOPES] = { "role_scopes", 3,
	  "SELECT array_to_string(r.scopes, ',') FROM roles r "
	  "WHERE r.id = $1::uuid AND (r.tenant_id IS NULL OR EXISTS "
	  "(SELECT 1 FROM tenants t WHERE t.id = $2::uuid AND "
	  "r.tenant_id = ANY(t.path))) AND " ROLE_VISIBLE("$3::uuid") },
	[STMT_KEY_GET] = { "key_get", 2,
	  "SELECT " KEY_COLS KEY_FROM
	  "WHERE k.id = $1::uuid AND $2::uuid = ANY(t.path)" },
	[STMT_KEY_LIST] = { "key_list", 5,
	  "SELECT " KEY_COLS KEY_FROM
	  "WHERE t.path @> ARRAY[$1::uuid] "
	  "AND ($2::uuid IS NULL OR k.tenant_id = $2::uuid) "
	  "AND ($3::bool OR k.revoked_at IS NULL) "
	  "AND ($4::uuid IS NULL OR (k.created_at, k.id) > "
	  "(SELECT created_at, id FROM api_keys WHERE id = $4::uuid)) "
	  "ORDER BY k.created_at, k.id LIMIT $5::int" },
	[STMT_KEY_DORMANT] = { "key_dormant", 4,
	  "SELECT " KEY_COLS KEY_FROM
	  "WHERE t.path @> ARRAY[$1::uuid] AND k.revoked_at IS NULL "
	  "AND k.disabled_at IS NULL AND (k.expires_at IS NULL OR "
	  "k.expires_at > now()) AND coalesce(k.last_used_at, k.created_at) "
	  "< now() - make_interval(days => $2::int) "
	  "AND ($3::uuid IS NULL OR (k.created_at, k.id) > "
	  "(SELECT created_at, id FROM api_keys WHERE id = $3::uuid)) "
	  "ORDER BY k.created_at, k.id LIMIT $4::int" },
	[STMT_KEY_UPDATE] = { "key_update", 12,
	  "UPDATE api_keys k SET "
	  "name = CASE WHEN $3::bool THEN $4 ELSE k.name END, "
	  "scopes = CASE WHEN $5::bool THEN $6::text[] ELSE k.scopes END, "
	  "expires_at = CASE WHEN $7::bool THEN $8::timestamptz "
	  "ELSE k.expires_at END, "
	  "rate_limit_max = CASE WHEN $9::bool THEN $10::int "
	  "ELSE k.rate_limit_max END, "
	  "rate_limit_window = CASE WHEN $11::bool THEN $12::int "
	  "ELSE k.rate_limit_window END, "
	  "updated_at = now() FROM tenants t "
	  "WHERE k.id = $1::uuid AND t.id = k.tenant_id AND "
	  "$2::uuid = ANY(t.path) AND k.revoked_at IS NULL RETURNING k.id" },
	[STMT_KEY_REVOKE] = { "key_revoke", 2,
	  "UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now()), "
	  "prev_key_prefix = NULL, prev_key_hash = NULL, "
	  "prev_expires_at = NULL, updated_at = now() FROM tenants t "
	  "WHERE k.id = $1::uuid AND t.id = k.tenant_id AND "
	  "$2::uuid = ANY(t.path) AND k.revoked_at IS NULL RETURNING k.id" },
	[STMT_KEY_ROTATE] = { "key_rotate", 6,
	  "UPDATE api_keys k SET "
	  "prev_key_prefix = CASE WHEN $6::int > 0 THEN k.key_prefix END, "
	  "prev_key_hash = CASE WHEN $6::int > 0 THEN k.key_hash END, "
	  "prev_expires_at = CASE WHEN $6::int > 0 THEN "
	  "now() + make_interval(secs => $6::int) END, "
	  "key_prefix = $3, key_hash = decode($4, 'hex'), last4 = $5, "
	  "updated_at = now() FROM tenants t "
	  "WHERE k.id = $1::uuid AND t.id = k.tenant_id AND "
	  "$2::uuid = ANY(t.path) AND k.revoked_at IS NULL RETURNING k.id" },
	/* The chain recomputed in id order. */
	[STMT_AUDIT_VERIFY] = { "audit_verify", 0,
	  "WITH c AS (SELECT id, prev_hash = coalesce(lag(row_hash) OVER "
	  "(ORDER BY id), '\\x'::bytea) AS link_ok, "
	  "row_hash = audit_row_hash(prev_hash, a) AS row_ok "
	  "FROM audit_log a) "
	  "SELECT (SELECT count(*) FROM c), b.id, b.link_ok, b.row_ok "
	  "FROM (SELECT 1) one LEFT JOIN (SELECT * FROM c WHERE NOT link_ok "
	  "OR NOT row_ok ORDER BY id LIMIT 1) b ON true" },
	[STMT_AUDIT_HEAD] = { "audit_head", 0,
	  "SELECT id, encode(row_hash, 'hex') FROM audit_log "
	  "ORDER BY id DESC LIMIT 1" },
	[STMT_AUDIT_ROW_HASH] = { "audit_row_hash", 1,
	  "SELECT encode(row_hash, 'hex') FROM audit_log "
	  "WHERE id = $1::bigint" },
	/* One statement: the keys and their audit rows commit together. */
	[STMT_KEY_DISABLE_DORMANT] = { "key_disable_dormant", 1,
	  "WITH d AS (UPDATE api_keys SET disabled_at = now(), "
	  "updated_at = now() WHERE revoked_at IS NULL AND "
	  "disabled_at IS NULL AND coalesce(last_used_at, created_at) < "
	  "now() - make_interval(days => $1::int) "
	  "RETURNING id, tenant_id, key_prefix) "
	  "INSERT INTO audit_log (tenant_id, actor, action, target_type, "
	  "target_id, details) SELECT tenant_id, 'keygated', "
	  "'api_key.disable', 'api_key', id::text, jsonb_build_object("
	  "'reason', 'dormant', 'days', $1::int, 'key_prefix', key_prefix) "
	  "FROM d RETURNING target_id" },
	[STMT_BUILTIN_ROLE_SCOPES] = { "builtin_role_scopes", 1,
	  "SELECT array_to_string(scopes, ',') FROM roles "
	  "WHERE name = $1 AND builtin AND tenant_id IS NULL" },
	[STMT_TENANT_INSERT] = { "tenant_insert", 2,
	  "INSERT INTO tenants (id, parent_id, name, path) "
	  "SELECT g.id, p.id, $2, p.path || g.id FROM tenants p, "
	  "(SELECT gen_random_uuid() AS id) g WHERE p.id = $1::uuid "
	  "RETURNING id" },
	[STMT_TENANT_GET] = { "tenant_get", 2,
	  "SELECT " TENANT_COLS "FROM tenants t "
	  "WHERE t.id = $1::uuid AND $2::uuid = ANY(t.path)" },
	[STMT_TENANT_LIST] = { "tenant_list", 3,
	  "SELECT " TENANT_COLS "FROM tenants t "
	  "WHERE t.path @> ARRAY[$1::uuid] AND ($2::uuid IS NULL OR "
	  "(t.created_at, t.id) > (SELECT created_at, id FROM tenants "
	  "WHERE id = $2::uuid)) ORDER BY t.created_at, t.id LIMIT $3::int" },
	[STMT_TENANT_UPDATE] = { "tenant_update", 4,
	  "UPDATE tenants t SET name = CASE WHEN $3::bool THEN $4 "
	  "ELSE t.name END, updated_at = now() "
	  "WHERE t.id = $1::uuid AND $2::uuid = ANY(t.path) RETURNING t.id" },
	[STMT_TENANT_DEACTIVATE] = { "tenant_deactivate", 1,
	  "UPDATE tenants SET active = false, updated_at = now() "
	  "WHERE path @> ARRAY[$1::uuid] AND active RETURNING id" },
	/*
	 * A subtree's export, part by part, one JSON object a row: the
	 * handler streams each part as PostgreSQL sends it.
	 */
#define EXPORT_SUB \
	"WITH sub AS (SELECT id FROM tenants WHERE path @> ARRAY[$1::uuid]) "
	[STMT_EXPORT_TENANTS] = { "export_tenants", 1, EXPORT_SUB
	  "SELECT json_build_object("
	  "'id', t.id, 'parent_id', t.parent_id, 'name', t.name, "
	  "'path', t.path, 'active', t.active, "
	  "'credits_balance', t.credits_balance, "
	  "'metadata', t.metadata, 'created_at', t.created_at)::text "
	  "FROM tenants t WHERE t.id IN (SELECT id FROM sub) "
	  "ORDER BY cardinality(t.path), t.created_at" },
	[STMT_EXPORT_KEYS] = { "export_keys", 1, EXPORT_SUB
	  "SELECT json_build_object("
	  "'id', k.id, 'tenant_id', k.tenant_id, 'name', k.name, "
	  "'env', k.env, 'key_prefix', k.key_prefix, 'last4', k.last4, "
	  "'scopes', k.scopes, 'role_id', k.role_id, "
	  "'expires_at', k.expires_at, 'revoked_at', k.revoked_at, "
	  "'disabled_at', k.disabled_at, 'last_used_at', k.last_used_at, "
	  "'created_at', k.created_at)::text "
	  "FROM api_keys k WHERE k.tenant_id IN (SELECT id FROM sub) "
	  "ORDER BY k.created_at, k.id" },
	[STMT_EXPORT_ROLES] = { "export_roles", 1, EXPORT_SUB
	  "SELECT json_build_object("
	  "'id', r.id, 'tenant_id', r.tenant_id, 'name', r.name, "
	  "'description', r.description, 'scopes', r.scopes)::text "
	  "FROM roles r WHERE r.tenant_id IN (SELECT id FROM sub) "
	  "ORDER BY r.created_at" },
	[STMT_EXPORT_LLM_KEYS] = { "export_llm_keys", 1, EXPORT_SUB
	  "SELECT json_build_object("
	  "'tenant_id', l.tenant_id, 'provider', l.provider, "
	  "'last_validated_at', l.last_validated_at, "
	  "'updated_at', l.updated_at)::text "
	  "FROM llm_keys l WHERE l.tenant_id IN (SELECT id FROM sub) "
	  "ORDER BY l.tenant_id, l.provider" },
	[STMT_EXPORT_USAGE] = { "export_usage", 1, EXPORT_SUB
	  "SELECT json_build_object("
	  "'request_id', u.request_id, 'tenant_id', u.tenant_id, "
	  "'api_key_id', u.api_key_id, 'provider', u.provider, "
	  "'model', u.model, 'prompt_tokens', u.prompt_tokens, "
	  "'completion_tokens', u.completion_tokens, "
	  "'credits_charged', u.credits_charged, "
	  "'created_at', u.created_at)::text "
	  "FROM usage u WHERE u.tenant_id IN (SELECT id FROM sub) "
	  "ORDER BY u.id" },
	[STMT_EXPORT_AUDIT] = { "export_audit", 1, EXPORT_SUB
	  "SELECT json_build_object("
	  "'id', a.id, 'created_at', a.created_at, 'tenant_id', a.tenant_id, "
	  "'actor_key_id', a.actor_key_id, 'actor', a.actor, "
	  "'action', a.action, 'target_type', a.target_type, "
	  "'target_id', a.target_id, 'request_id', a.request_id, "
	  "'details', a.details)::text "
	  "FROM audit_log a WHERE a.tenant_id IN (SELECT id FROM sub) "
	  "ORDER BY a.id" },
	/*
	 * Keys go before roles (they reference them) and tenants last, all
	 * in one statement so the self-referencing parent_id is checked
	 * once the whole subtree is gone.  Audit rows stay: they hold ids.
	 */
	[STMT_TENANT_PURGE] = { "tenant_purge", 1,
	  "WITH sub AS (SELECT id FROM tenants WHERE path @> ARRAY[$1::uuid]), "
	  "u AS (DELETE FROM usage WHERE tenant_id IN (SELECT id FROM sub) "
	  "RETURNING 1), "
	  "c AS (DELETE FROM credit_reservations WHERE tenant_id IN "
	  "(SELECT id FROM sub) RETURNING 1), "
	  "cl AS (DELETE FROM credit_ledger WHERE tenant_id IN "
	  "(SELECT id FROM sub) RETURNING 1), "
	  "l AS (DELETE FROM llm_keys WHERE tenant_id IN (SELECT id FROM sub) "
	  "RETURNING 1), "
	  "k AS (DELETE FROM api_keys WHERE tenant_id IN (SELECT id FROM sub) "
	  "RETURNING 1), "
	  "r AS (DELETE FROM roles WHERE tenant_id IN (SELECT id FROM sub) "
	  "RETURNING 1), "
	  "t AS (DELETE FROM tenants WHERE id IN (SELECT id FROM sub) "
	  "RETURNING 1) "
	  "SELECT json_build_object('tenants', (SELECT count(*) FROM t), "
	  "'api_keys', (SELECT count(*) FROM k), "
	  "'roles', (SELECT count(*) FROM r), "
	  "'llm_keys', (SELECT count(*) FROM l), "
	  "'usage', (SELECT count(*) FROM u), "
	  "'credit_reservations', (SELECT count(*) FROM c))::text" },
	[STMT_ROLE_INSERT] = { "role_insert", 4,
	  "INSERT INTO roles (tenant_id, name, description, scopes) "
	  "VALUES ($1::uuid, $2, $3, $4::text[]) RETURNING id" },
	[STMT_ROLE_GET] = { "role_get", 2,
	  "SELECT " ROLE_COLS ", " ROLE_MINE("$2::uuid") "FROM roles r "
	  "WHERE r.id = $1::uuid AND " ROLE_VISIBLE("$2::uuid") },
	[STMT_ROLE_LIST] = { "role_list", 3,
	  "SELECT " ROLE_COLS ", " ROLE_MINE("$1::uuid") "FROM roles r "
	  "WHERE " ROLE_VISIBLE("$1::uuid")
	  "AND ($2::uuid IS NULL OR (r.created_at, r.id) > "
	  "(SELECT created_at, id FROM roles WHERE id = $2::uuid)) "
	  "ORDER BY r.created_at, r.id LIMIT $3::int" },
	[STMT_ROLE_UPDATE] = { "role_update", 8,
	  "UPDATE roles r SET name = CASE WHEN $3::bool THEN $4 "
	  "ELSE r.name END, description = CASE WHEN $5::bool THEN $6 "
	  "ELSE r.description END, scopes = CASE WHEN $7::bool THEN "
	  "$8::text[] ELSE r.scopes END, updated_at = now() "
	  "WHERE r.id = $1::uuid AND " ROLE_MINE("$2::uuid") "RETURNING r.id" },
	[STMT_ROLE_DELETE] = { "role_delete", 2,
	  "DELETE FROM roles r WHERE r.id = $1::uuid AND " ROLE_MINE("$2::uuid")
	  "RETURNING r.id" },
	[STMT_ROLE_ASSIGNED] = { "role_assigned", 1,
	  "SELECT count(*) FROM api_keys WHERE role_id = $1::uuid" },
	[STMT_KEY_SET_ROLE] = { "key_set_role", 3,
	  "UPDATE api_keys k SET role_id = $3::uuid, updated_at = now() "
	  "FROM tenants t WHERE k.id = $1::uuid AND t.id = k.tenant_id AND "
	  "$2::uuid = ANY(t.path) RETURNING k.id" },
	/*
	 * Newest first, by id: the cursor is the last id seen, so a deep page
	 * costs the same index range scan as the first.  Rows without a
	 * tenant (operator actions) are not shown through the API.
	 */
	/*
	 * Who acted, and from where, is shown only when the actor is a key of
	 * the caller's subtree (or the caller is the root tenant, which has no
 * parent): an
	 * ancestor's key ids and addresses are not a descendant's to see.
	 */
	[STMT_AUDIT_LIST] = { "audit_list", 8,
	  "SELECT a.id, " TS("a.created_at") ", coalesce(a.tenant_id::text, "
	  "''), CASE WHEN v.shown THEN coalesce(a.actor_key_id::text, '') "
	  "ELSE '' END, CASE WHEN v.shown THEN a.actor END, a.action, "
	  "a.target_type, a.target_id, a.request_id, CASE WHEN v.shown THEN "
	  "a.client_addr END, a.details::text FROM audit_log a "
	  "CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM tenants ct "
	  "WHERE ct.id = $1::uuid AND ct.parent_id IS NULL) OR EXISTS (SELECT 1 FROM api_keys ak JOIN tenants kt ON kt.id = "
	  "ak.tenant_id WHERE ak.id = a.actor_key_id AND $1::uuid = "
	  "ANY(kt.path)) AS shown) v JOIN tenants t ON t.id = "
	  "a.tenant_id WHERE t.path @> ARRAY[$1::uuid] "
	  "AND ($2::text IS NULL OR a.action = $2) "
	  "AND ($3::uuid IS NULL OR a.actor_key_id = $3::uuid) "
	  "AND ($4::text IS NULL OR a.target_id = $4) "
	  "AND ($5::timestamptz IS NULL OR a.created_at >= $5::timestamptz) "
	  "AND ($6::timestamptz IS NULL OR a.created_at < $6::timestamptz) "
	  "AND ($7::bigint IS NULL OR a.id < $7::bigint) "
	  "ORDER BY a.id DESC LIMIT $8::int" },
	[STMT_LLM_KEY_UPSERT] = { "llm_key_upsert", 5,
	  "INSERT INTO llm_keys (tenant_id, provider, ciphertext, "
	  "master_key_id, last_validated_at) VALUES ($1::uuid, $2, $3, $4, "
	  "CASE WHEN $5::bool THEN now() END) ON CONFLICT (tenant_id, "
	  "provider) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, "
	  "master_key_id = EXCLUDED.master_key_id, last_validated_at = "
	  "EXCLUDED.last_validated_at, updated_at = now()" },
	[STMT_LLM_KEY_STATUS] = { "llm_key_status", 1,
	  "SELECT provider, coalesce(" TS("last_validated_at") ", '') "
	  "FROM llm_keys WHERE tenant_id = $1::uuid" },
	[STMT_LLM_KEY_DELETE] = { "llm_key_delete", 2,
	  "DELETE FROM llm_keys WHERE tenant_id = $1::uuid AND "
	  "($2::text IS NULL OR provider = $2) RETURNING provider" },
	[STMT_LLM_KEY_ALL] = { "llm_key_all", 0,
	  "SELECT tenant_id, provider, ciphertext, master_key_id "
	  "FROM llm_keys ORDER BY tenant_id, provider FOR UPDATE" },
	[STMT_LLM_KEY_REWRITE] = { "llm_key_rewrite", 4,
	  "UPDATE llm_keys AS l SET ciphertext = u.ct, master_key_id = $4, "
	  "updated_at = now() FROM unnest($1::uuid[], $2::text[], "
	  "$3::text[]) AS u(tenant, provider, ct) "
	  "WHERE l.tenant_id = u.tenant AND l.provider = u.provider" },
	[STMT_LLM_KEY_GET] = { "llm_key_get", 2,
	  "SELECT ciphertext, master_key_id FROM llm_keys "
	  "WHERE tenant_id = $1::uuid AND provider = $2" },
	/*
	 * One statement counts and decides: the row lock serializes every
	 * worker of every host on the same counter, and a request over the
	 * limit changes nothing.
	 */
	[STMT_RATE_TAKE] = { "rate_take", 4,
	  "INSERT INTO rate_counters AS r (subject, window_start, count, "
	  "granted) VALUES ($1, $2::bigint, least($4::int, $3::int), "
	  "least($4::int, $3::int)) ON CONFLICT (subject, window_start) "
	  "DO UPDATE SET count = r.count + least($4::int, $3::int - r.count), "
	  "granted = least($4::int, $3::int - r.count) "
	  "WHERE r.count < $3::int RETURNING count, granted" },
	[STMT_RATE_GIVE_BACK] = { "rate_give_back", 3,
	  "UPDATE rate_counters SET count = count - $3::int "
	  "WHERE subject = $1 AND window_start = $2::bigint AND "
	  "count >= $3::int" },
	[STMT_RATE_PEEK] = { "rate_peek", 2,
	  "SELECT coalesce((SELECT count FROM rate_counters WHERE "
	  "subject = $1 AND window_start = $2::bigint), 0)" },
	[STMT_RATE_PRUNE] = { "rate_prune", 1,
	  "DELETE FROM rate_counters WHERE window_start < $1::bigint" },
	/* Patterns are operator data: only '*' is a wildcard in them. */
	[STMT_PRICE_FOR] = { "price_for", 1,
	  "SELECT input_per_mtok, output_per_mtok, pattern FROM prices "
	  "WHERE $1 LIKE "
	  "replace(replace(replace(replace(pattern, '\\', '\\\\'), '%', "
	  "'\\%'), '_', '\\_'), '*', '%') "
	  "ORDER BY length(pattern) DESC, pattern LIMIT 1" },
	/*
	 * One statement checks and holds: the row lock makes concurrent
	 * requests of a tenant take turns, so they can never together hold
	 * more than the balance.  A statement of its own, so the lock lasts
	 * one round trip and the commit.
	 */
	[STMT_CREDITS_RESERVE] = { "credits_reserve", 8,
	  "WITH t AS (UPDATE tenants SET credits_reserved = credits_reserved "
	  "+ $4::bigint WHERE id = $1::uuid AND credits_balance - "
	  "credits_reserved >= $4::bigint RETURNING id), "
	  "r AS (INSERT INTO credit_reservations (id, tenant_id, api_key_id, "
	  "request_id, amount, owner_host, owner_pid, deadline) "
	  "SELECT $8::uuid, t.id, $2::uuid, $3, $4::bigint, $5, $6::int, "
	  "now() + make_interval(secs => $7::int) FROM t RETURNING id), "
	  "l AS (INSERT INTO credit_ledger (tenant_id, kind, held, "
	  "reservation_id, request_id) SELECT $1::uuid, 'hold', $4::bigint, "
	  "r.id, $3 FROM r) "
	  "SELECT id FROM r", true },
	/*
	 * A lease: up to want (at least need) of the free balance held for
	 * this host as one reservation, owned by the master.
	 */
	[STMT_LEASE_NEW] = { "lease_new", 6,
	  "WITH a AS (SELECT id, least($3::bigint, credits_balance - "
	  "credits_reserved) AS n FROM tenants WHERE id = $1::uuid AND "
	  "credits_balance - credits_reserved >= $2::bigint FOR UPDATE), "
	  "t AS (UPDATE tenants SET credits_reserved = credits_reserved + a.n "
	  "FROM a WHERE tenants.id = a.id RETURNING a.n), "
	  "r AS (INSERT INTO credit_reservations (tenant_id, request_id, "
	  "amount, owner_host, owner_pid, deadline) SELECT $1::uuid, "
	  "'lease', t.n, $4, $5::int, now() + make_interval(secs => "
	  "$6::int) FROM t RETURNING id, amount), "
	  "l AS (INSERT INTO credit_ledger (tenant_id, kind, held, "
	  "reservation_id, request_id) SELECT $1::uuid, 'hold', r.amount, "
	  "r.id, 'lease' FROM r) "
	  "SELECT id::text, amount FROM r", true },
	/* The lease's row is locked first: one the sweep let go stays gone. */
	[STMT_LEASE_GROW] = { "lease_grow", 5,
	  "WITH c AS (SELECT id FROM credit_reservations WHERE id = $1::uuid "
	  "FOR UPDATE), "
	  "a AS (SELECT id, least($4::bigint, credits_balance - "
	  "credits_reserved) AS n FROM tenants WHERE id = $2::uuid AND "
	  "credits_balance - credits_reserved >= $3::bigint AND "
	  "EXISTS (SELECT 1 FROM c) FOR UPDATE), "
	  "t AS (UPDATE tenants SET credits_reserved = credits_reserved + a.n "
	  "FROM a WHERE tenants.id = a.id RETURNING a.n), "
	  "r AS (UPDATE credit_reservations SET amount = amount + t.n, "
	  "deadline = now() + make_interval(secs => $5::int) FROM t "
	  "WHERE credit_reservations.id = $1::uuid "
	  "RETURNING credit_reservations.id, t.n), "
	  "l AS (INSERT INTO credit_ledger (tenant_id, kind, held, "
	  "reservation_id, request_id) SELECT $2::uuid, 'hold', r.n, r.id, "
	  "'lease' FROM r WHERE r.n > 0) "
	  "SELECT (SELECT n FROM r), EXISTS (SELECT 1 FROM c)", true },
	[STMT_LEASE_RENEW] = { "lease_renew", 2,
	  "UPDATE credit_reservations SET deadline = now() + "
	  "make_interval(secs => $2::int) WHERE id = ANY($1::uuid[]) "
	  "RETURNING id::text" },
	/*
	 * Calls ended on leases: their usage rows, and per lease one charge
	 * that takes their sum from the balance and from what the lease
	 * holds, in one statement.  A usage row already there (a batch that
	 * committed before its writer died) is not written or charged again;
	 * a call on a lease the database no longer has is charged nothing.
	 */
	[STMT_LEASE_WRITE] = { "lease_write", 14,
	  "WITH b AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], "
	  "$4::text[], $5::text[], $6::text[], $7::int[], $8::int[], "
	  "$9::bigint[], $10::numeric[], $11::text[], $12::uuid[], "
	  "$13::uuid[], $14::bigint[]) AS b(tenant_id, api_key_id, "
	  "request_id, provider, model, key_source, prompt_tokens, "
	  "completion_tokens, charged, markup, status, lease, call, cost)), "
	  "c AS (SELECT id FROM credit_reservations WHERE id IN "
	  "(SELECT lease FROM b) FOR UPDATE), "
	  "u AS (INSERT INTO usage (tenant_id, api_key_id, request_id, "
	  "provider, model, key_source, prompt_tokens, completion_tokens, "
	  "credits_charged, markup, status, reservation_id, lease_id, "
	  "credits_forgiven) "
	  "SELECT b.tenant_id, b.api_key_id, b.request_id, b.provider, "
	  "b.model, b.key_source, b.prompt_tokens, b.completion_tokens, "
	  "CASE WHEN c.id IS NULL THEN 0 ELSE b.charged END, b.markup, "
	  "b.status, b.call, c.id, b.cost - CASE WHEN c.id IS NULL THEN 0 "
	  "ELSE b.charged END FROM b LEFT JOIN c ON c.id = b.lease "
	  "ON CONFLICT (reservation_id) DO NOTHING "
	  "RETURNING tenant_id, lease_id, credits_charged), "
	  "s AS (SELECT tenant_id, lease_id, sum(credits_charged) AS n "
	  "FROM u WHERE lease_id IS NOT NULL GROUP BY 1, 2 "
	  "HAVING sum(credits_charged) > 0), "
	  "r AS (UPDATE credit_reservations SET amount = amount - s.n FROM s "
	  "WHERE credit_reservations.id = s.lease_id), "
	  "x AS (SELECT tenant_id, sum(n) AS n FROM s GROUP BY 1), "
	  "t AS (UPDATE tenants SET credits_balance = credits_balance - x.n, "
	  "credits_reserved = credits_reserved - x.n FROM x "
	  "WHERE tenants.id = x.tenant_id), "
	  "l AS (INSERT INTO credit_ledger (tenant_id, kind, amount, held, "
	  "reservation_id, request_id) SELECT tenant_id, 'charge', -n, -n, "
	  "lease_id, 'lease' FROM s) "
	  "SELECT count(*) FROM u" },
	/* Every tenant whose credits break an invariant, and how. */
	[STMT_LEDGER_CHECK] = { "ledger_check", 0,
	  "WITH h AS (SELECT tenant_id, sum(amount) AS held, "
	  "count(*) FILTER (WHERE deadline < now()) AS late "
	  "FROM credit_reservations GROUP BY tenant_id) "
	  "SELECT t.id::text, concat_ws('; ', "
	  "CASE WHEN t.credits_balance < 0 THEN 'negative balance ' || "
	  "t.credits_balance END, "
	  "CASE WHEN t.credits_reserved < 0 THEN 'negative reserve ' || "
	  "t.credits_reserved END, "
	  "CASE WHEN t.credits_reserved <> coalesce(h.held, 0) THEN "
	  "'reserve ' || t.credits_reserved || ' but holds of ' || "
	  "coalesce(h.held, 0) END, "
	  "CASE WHEN coalesce(h.late, 0) > 0 THEN h.late || "
	  "' hold(s) past their deadline' END, "
	  "CASE WHEN t.credits_balance <> coalesce(l.amount, 0) THEN "
	  "'balance ' || t.credits_balance || ' but ledger rows of ' || "
	  "coalesce(l.amount, 0) END, "
	  "CASE WHEN t.credits_reserved <> coalesce(l.held, 0) THEN "
	  "'reserve ' || t.credits_reserved || ' but ledger holds of ' || "
	  "coalesce(l.held, 0) END) || ' (micro-credits)' "
	  "FROM tenants t LEFT JOIN h ON h.tenant_id = t.id "
	  "LEFT JOIN (SELECT tenant_id, sum(amount) AS amount, "
	  "sum(held) AS held FROM credit_ledger GROUP BY tenant_id) l "
	  "ON l.tenant_id = t.id "
	  "WHERE t.credits_balance < 0 OR t.credits_reserved < 0 OR "
	  "t.credits_reserved <> coalesce(h.held, 0) OR "
	  "coalesce(h.late, 0) > 0 OR "
	  "t.credits_balance <> coalesce(l.amount, 0) OR "
	  "t.credits_reserved <> coalesce(l.held, 0) ORDER BY t.id" },
	/* Holds a dead process of this host, or their deadline, left. */
	[STMT_CREDITS_STALE] = { "credits_stale", 1,
	  "SELECT id::text, owner_pid, deadline < now() FROM "
	  "credit_reservations WHERE owner_host = $1 OR deadline < now() "
	  "LIMIT 1000" },
	[STMT_CREDITS_AVAILABLE] = { "credits_available", 1,
	  "SELECT credits_balance - credits_reserved FROM tenants "
	  "WHERE id = $1::uuid" },
	/* $2 says why: 'release', or 'expiry' (see credits_release_stale()). */
	[STMT_CREDITS_RELEASE] = { "credits_release", 2,
	  "WITH r AS (DELETE FROM credit_reservations WHERE id = $1::uuid "
	  "RETURNING tenant_id, amount, request_id), "
	  "l AS (INSERT INTO credit_ledger (tenant_id, kind, held, "
	  "reservation_id, request_id) SELECT r.tenant_id, $2, -r.amount, "
	  "$1::uuid, r.request_id FROM r) "
	  "UPDATE tenants t SET "
	  "credits_reserved = t.credits_reserved - r.amount FROM r "
	  "WHERE t.id = r.tenant_id" },
	/*
	 * The reservation turns into the real cost, never more than the
	 * balance holds (so the balance never goes below zero), and the
	 * usage row is written by the same statement: exactly one, charged
	 * 0 when the reservation was already gone.
	 */
	[STMT_CREDITS_SETTLE] = { "credits_settle", 12,
	  "WITH r AS (DELETE FROM credit_reservations WHERE id = $1::uuid "
	  "RETURNING tenant_id, amount), c AS (SELECT t.id, r.amount, "
	  "least($2::bigint, greatest(t.credits_balance - "
	  "(t.credits_reserved - r.amount), 0)) AS charged FROM tenants t "
	  "JOIN r ON t.id = r.tenant_id FOR UPDATE OF t), "
	  "s AS (UPDATE tenants t SET credits_reserved = t.credits_reserved - "
	  "c.amount, credits_balance = t.credits_balance - c.charged FROM c "
	  "WHERE t.id = c.id RETURNING c.charged), "
	  "l AS (INSERT INTO credit_ledger (tenant_id, kind, amount, held, "
	  "reservation_id, request_id) SELECT c.id, 'charge', -c.charged, "
	  "-c.amount, $1::uuid, $5 FROM c) "
	  "INSERT INTO usage (tenant_id, api_key_id, request_id, provider, "
	  "model, key_source, prompt_tokens, completion_tokens, "
	  "credits_charged, markup, status, reservation_id, "
	  "credits_forgiven) SELECT $3::uuid, "
	  "$4::uuid, $5, $6, $7, $8, $9::int, $10::int, coalesce((SELECT "
	  "charged FROM s), 0), $11::numeric, $12, $1::uuid, "
	  "$2::bigint - coalesce((SELECT charged FROM s), 0) "
	  "RETURNING credits_charged", true },
	/* What a settlement that may have been lost with its connection did. */
	[STMT_CREDITS_SETTLED] = { "credits_settled", 1,
	  "SELECT credits_charged FROM usage WHERE reservation_id = $1::uuid" },
	/*
	 * Holds for several calls in one statement (ids chosen by the
	 * caller): a tenant's rows are locked in the order of their ids, so
	 * that two of these never wait for each other, and its calls are
	 * held in the order given for as long as its free balance holds all
	 * of them so far.  The calls not held are to be tried one by one.
	 */
	[STMT_CREDITS_RESERVE_MANY] = { "credits_reserve_many", 8,
	  "WITH b AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], "
	  "$3::uuid[], $4::text[], $5::bigint[], $6::int[]) WITH ORDINALITY "
	  "AS b(id, tenant_id, api_key_id, request_id, amount, secs, ord)), "
	  "a AS (SELECT id, credits_balance - credits_reserved AS free "
	  "FROM tenants WHERE id IN (SELECT tenant_id FROM b) ORDER BY id "
	  "FOR UPDATE), "
	  "w AS (SELECT b.*, a.free, sum(b.amount) OVER (PARTITION BY "
	  "b.tenant_id ORDER BY b.ord) AS upto FROM b JOIN a ON "
	  "a.id = b.tenant_id), "
	  "ok AS (SELECT * FROM w WHERE upto <= free), "
	  "t AS (UPDATE tenants SET credits_reserved = credits_reserved + "
	  "s.n FROM (SELECT tenant_id, sum(amount) AS n FROM ok GROUP BY 1) s "
	  "WHERE tenants.id = s.tenant_id), "
	  "r AS (INSERT INTO credit_reservations (id, tenant_id, api_key_id, "
	  "request_id, amount, owner_host, owner_pid, deadline) SELECT id, "
	  "tenant_id, api_key_id, request_id, amount, $7, $8::int, now() + "
	  "make_interval(secs => secs) FROM ok), "
	  "l AS (INSERT INTO credit_ledger (tenant_id, kind, held, "
	  "reservation_id, request_id) SELECT tenant_id, 'hold', amount, id, "
	  "request_id FROM ok) "
	  "SELECT id::text FROM ok", true },
	/* Which of these holds exist (after a batch whose end was lost). */
	[STMT_CREDITS_HELD] = { "credits_held", 1,
	  "SELECT id::text FROM credit_reservations WHERE id = ANY($1::uuid[])" },
	/*
	 * Settles several calls in one statement, each with its usage row
	 * and ledger row as credits_settle does: only the calls of tenants
	 * whose balance pays all of their costs (so none is cut to what is
	 * left, and the order does not matter), and only holds that still
	 * exist.  The others are to be settled one by one.  Holds are locked
	 * before tenants, as everywhere.
	 */
	[STMT_CREDITS_SETTLE_MANY] = { "credits_settle_many", 12,
	  "WITH b AS (SELECT * FROM unnest($1::uuid[], $2::bigint[], "
	  "$3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], "
	  "$8::text[], $9::int[], $10::int[], $11::numeric[], $12::text[]) "
	  "AS b(id, cost, tenant_id, api_key_id, request_id, provider, model, "
	  "key_source, prompt_tokens, completion_tokens, markup, status)), "
	  "h AS (SELECT id, tenant_id, amount FROM credit_reservations "
	  "WHERE id IN (SELECT id FROM b) FOR UPDATE), "
	  "a AS (SELECT id, credits_balance - credits_reserved AS free "
	  "FROM tenants WHERE id IN (SELECT tenant_id FROM h) ORDER BY id "
	  "FOR UPDATE), "
	  "f AS (SELECT h.tenant_id FROM h JOIN b ON b.id = h.id JOIN a ON "
	  "a.id = h.tenant_id GROUP BY h.tenant_id, a.free "
	  "HAVING sum(b.cost) <= a.free + sum(h.amount)), "
	  "g AS (SELECT b.*, h.tenant_id AS holder, h.amount FROM b JOIN h "
	  "ON h.id = b.id WHERE h.tenant_id IN (SELECT tenant_id FROM f)), "
	  "d AS (DELETE FROM credit_reservations WHERE id IN "
	  "(SELECT id FROM g)), "
	  "s AS (UPDATE tenants SET credits_reserved = credits_reserved - "
	  "x.held, credits_balance = credits_balance - x.charged FROM "
	  "(SELECT holder, sum(amount) AS held, sum(cost) AS charged FROM g "
	  "GROUP BY 1) x WHERE tenants.id = x.holder), "
	  "l AS (INSERT INTO credit_ledger (tenant_id, kind, amount, held, "
	  "reservation_id, request_id) SELECT holder, 'charge', -cost, "
	  "-amount, id, request_id FROM g), "
	  "u AS (INSERT INTO usage (tenant_id, api_key_id, request_id, "
	  "provider, model, key_source, prompt_tokens, completion_tokens, "
	  "credits_charged, markup, status, reservation_id, "
	  "credits_forgiven) SELECT tenant_id, api_key_id, request_id, "
	  "provider, model, key_source, prompt_tokens, completion_tokens, "
	  "cost, markup, status, id, 0 FROM g) "
	  "SELECT id::text FROM g", true },
	[STMT_CREDITS_SETTLED_MANY] = { "credits_settled_many", 1,
	  "SELECT reservation_id::text, credits_charged FROM usage "
	  "WHERE reservation_id = ANY($1::uuid[])" },
	/* $3 is 'mint' or 'transfer_in', $4 the giver, $5 the request. */
	[STMT_CREDITS_ADD] = { "credits_add", 5,
	  "WITH t AS (UPDATE tenants SET credits_balance = credits_balance + "
	  "$2::bigint, updated_at = now() WHERE id = $1::uuid "
	  "RETURNING id, credits_balance), "
	  "l AS (INSERT INTO credit_ledger (tenant_id, kind, amount, "
	  "counterpart, request_id) SELECT t.id, $3, $2::bigint, $4::uuid, $5 "
	  "FROM t) SELECT credits_balance FROM t" },
	/*
	 * What is held stays: only the free part of a balance moves.  $3 is
	 * the receiver, $4 the request.
	 */
	[STMT_CREDITS_DEBIT] = { "credits_debit", 4,
	  "WITH t AS (UPDATE tenants SET credits_balance = credits_balance - "
	  "$2::bigint, updated_at = now() WHERE id = $1::uuid AND "
	  "credits_balance - credits_reserved >= $2::bigint "
	  "RETURNING id, credits_balance), "
	  "l AS (INSERT INTO credit_ledger (tenant_id, kind, amount, "
	  "counterpart, request_id) SELECT t.id, 'transfer_out', -$2::bigint, "
	  "$3::uuid, $4 FROM t) SELECT credits_balance FROM t" },
	[STMT_ACCOUNT] = { "account", 1,
	  "SELECT t.credits_balance, t.credits_reserved, "
	  "(SELECT count(*) FROM api_keys k WHERE k.tenant_id = t.id AND "
	  "k.revoked_at IS NULL AND k.disabled_at IS NULL AND "
	  "(k.expires_at IS NULL OR k.expires_at > now())), "
	  "(SELECT count(*) FROM api_keys k WHERE k.tenant_id = t.id) "
	  "FROM tenants t WHERE t.id = $1::uuid" },
	[STMT_PRICE_LIST] = { "price_list", 0,
	  "SELECT pattern, input_per_mtok, output_per_mtok FROM prices "
	  "ORDER BY pattern" },
	[STMT_PRICE_SET] = { "price_set", 3,
	  "INSERT INTO prices (pattern, input_per_mtok, output_per_mtok) "
	  "VALUES ($1, $2::bigint, $3::bigint) ON CONFLICT (pattern) DO "
	  "UPDATE SET input_per_mtok = EXCLUDED.input_per_mtok, "
	  "output_per_mtok = EXCLUDED.output_per_mtok, updated_at = now()" },
	[STMT_OPENROUTER_MODEL_GET] = { "openrouter_model_get", 1,
	  "SELECT openrouter_id FROM openrouter_models WHERE model = $1" },
	[STMT_OPENROUTER_MODEL_LIST] = { "openrouter_model_list", 0,
	  "SELECT model, openrouter_id FROM openrouter_models ORDER BY model" },
	[STMT_OPENROUTER_MODEL_SET] = { "openrouter_model_set", 2,
	  "INSERT INTO openrouter_models (model, openrouter_id) VALUES ($1, $2) "
	  "ON CONFLICT (model) DO UPDATE SET openrouter_id = "
	  "EXCLUDED.openrouter_id, updated_at = now()" },
	[STMT_MODEL_IDS] = { "model_ids", 0,
	  "SELECT DISTINCT ON (model) model, created FROM ("
	  "SELECT model, extract(epoch FROM created_at)::bigint AS created "
	  "FROM openrouter_models UNION ALL "
	  "SELECT pattern, extract(epoch FROM updated_at)::bigint FROM prices "
	  "WHERE strpos(pattern, '*') = 0) m ORDER BY model, created" },
	[STMT_USAGE_LIST] = { "usage_list", 5,
	  "SELECT id, request_id, coalesce(api_key_id::text, ''), provider, "
	  "model, key_source, prompt_tokens, completion_tokens, "
	  "credits_charged, status, " TS("created_at") " FROM usage "
	  "WHERE tenant_id = $1::uuid "
	  "AND ($2::timestamptz IS NULL OR created_at >= $2::timestamptz) "
	  "AND ($3::timestamptz IS NULL OR created_at < $3::timestamptz) "
	  "AND ($4::bigint IS NULL OR id < $4::bigint) "
	  "ORDER BY id DESC LIMIT $5::int" },
	[STMT_USAGE_TOTALS] = { "usage_totals", 3,
	  "SELECT count(*), coalesce(sum(prompt_tokens), 0), "
	  "coalesce(sum(completion_tokens), 0), "
	  "coalesce(sum(credits_charged), 0) FROM usage "
	  "WHERE tenant_id = $1::uuid "
	  "AND ($2::timestamptz IS NULL OR created_at >= $2::timestamptz) "
	  "AND ($3::timestamptz IS NULL OR created_at < $3::timestamptz)" },
	[STMT_DEV_KEY_ACTIVE] = { "dev_key_active", 1,
	  "SELECT 1 FROM api_keys WHERE key_prefix = $1 AND "
	  "revoked_at IS NULL AND disabled_at IS NULL" },
	[STMT_DEV_KEY_CLEAR] = { "dev_key_clear", 2,
	  "DELETE FROM api_keys WHERE (id = $1::uuid OR key_prefix = $2) "
	  "AND (revoked_at IS NOT NULL OR disabled_at IS NOT NULL OR "
	  "expires_at <= now())" },
	[STMT_DEV_KEY_INSERT] = { "dev_key_insert", 5,
	  "INSERT INTO api_keys (id, tenant_id, name, env, key_prefix, "
	  "key_hash, last4, scopes) VALUES ($1::uuid, $2::uuid, "
	  "'development key', 'dev', $3, decode($4, 'hex'), $5, '{*}') "
	  "ON CONFLICT DO NOTHING RETURNING id" },
};

/* Seconds between connection attempts while the server is unreachable. */
#define RECONNECT_INTERVAL 1.0
#define DB_QUIET	5.0	/* s: db_poll() asks after this long */
#define POLL_READS	64	/* buffers db_poll() reads before it asks */
#define DRAIN_EACH	64	/* notifications handed over one by one */

struct db {
	PGconn		*conn;		/* NULL = not connected */
	char		*conninfo;	/* secret: may hold a password */
	char		 timeout[16];	/* connect_timeout, s */
	char		 options[128];	/* -c settings of every session */
	char		*appname;
	bool		 prepared[STMT__MAX]; /* on this connection */
	bool		 in_tx;		/* between db_begin and commit */
	double		 next_attempt;	/* monotonic s, 0 = now */
	double		 last_answer;	/* monotonic s of the last result */
	enum db_status	 status;
	char		 sqlstate[6];
	char		 errmsg[256];
	char		 channel[64];	/* LISTENed to on connect, "" = none */
	void		(*notified)(void *, const char *, bool);
	void		*notified_arg;
	bool		 connected_once; /* a connection was made before */
	unsigned long	 reconnects;	/* connections made after the first */
	unsigned long	 connects;	/* connections made */
	char		*setting;	/* set_config() on connect, or NULL */
	char		*setting_value;	/* secret: wiped when freed */
};

/* Copies the first line of a libpq message, without a trailing newline. */
static void
set_error(struct db *db, enum db_status st, const char *sqlstate,
    const char *msg)
{
	size_t	 n;

	db->status = st;
	snprintf(db->sqlstate, sizeof(db->sqlstate), "%s",
	    sqlstate != NULL ? sqlstate : "");
	snprintf(db->errmsg, sizeof(db->errmsg), "%s",
	    msg != NULL ? msg : "");
	n = strcspn(db->errmsg, "\n");
	db->errmsg[n] = '\0';
}

struct db *
db_new(const char *conninfo, int connect_timeout, const char *appname)
{
	struct db	*db;

	if ((db = calloc(1, sizeof(*db))) == NULL)
		return NULL;
	db->conninfo = strdup(conninfo);
	db->appname = strdup(appname);
	if (db->conninfo == NULL || db->appname == NULL) {
		db_free(db);
		return NULL;
	}
	snprintf(db->timeout, sizeof(db->timeout), "%d", connect_timeout);
	return db;
}

static void
disconnect(struct db *db)
{
	if (db->conn != NULL)
		PQfinish(db->conn);
	db->conn = NULL;
	db->in_tx = false;
	memset(db->prepared, 0, sizeof(db->prepared));
}

void
db_set_timeouts(struct db *db, int statement_ms, int lock_ms)
{
	snprintf(db->options, sizeof(db->options), "-c statement_timeout=%d "
	    "-c lock_timeout=%d", statement_ms, lock_ms);
	/* The next statement connects again, with them. */
	disconnect(db);
}

void
db_prefer_generic_plans(struct db *db)
{
	size_t	 n = strlen(db->options);

	snprintf(db->options + n, sizeof(db->options) - n,
	    " -c plan_cache_mode=force_generic_plan");
	disconnect(db);
}

bool
db_timed_out(const struct db *db)
{
	return db->status == DB_UNAVAILABLE &&
	    (strcmp(db->sqlstate, "57014") == 0 ||
	    strcmp(db->sqlstate, "55P03") == 0);
}

static void
free_setting(struct db *db)
{
	if (db->setting_value != NULL) {
		explicit_bzero(db->setting_value, strlen(db->setting_value));
		free(db->setting_value);
	}
	free(db->setting);
	db->setting = db->setting_value = NULL;
}

int
db_set_session(struct db *db, const char *name, const char *value)
{
	free_setting(db);
	if ((db->setting = strdup(name)) == NULL ||
	    (db->setting_value = strdup(value)) == NULL) {
		free_setting(db);
		return -1;
	}
	/* The next statement connects again, with it. */
	disconnect(db);
	return 0;
}

/*
 * Sets the session's setting, as a parameter: the value is in no query
 * text (pg_stat_activity, the server's log of statements).  0, or -1.
 */
static int
apply_setting(struct db *db)
{
	const char	*p[2] = { db->setting, db->setting_value };
	PGresult	*res;
	int		 rc;

	if (db->setting == NULL)
		return 0;
	res = PQexecParams(db->conn, "SELECT pg_catalog.set_config($1, $2, "
	    "false) IS NULL", 2, NULL, p, NULL, NULL, 0);
	rc = res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK ? 0 : -1;
	PQclear(res);
	return rc;
}

void
db_free(struct db *db)
{
	if (db == NULL)
		return;
	disconnect(db);
	if (db->conninfo != NULL) {
		explicit_bzero(db->conninfo, strlen(db->conninfo));
		free(db->conninfo);
	}
	free(db->appname);
	free_setting(db);
	free(db);
}

/* Server notices (\"relation already exists, skipping\") are not errors. */
static void
ignore_notice(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

static int	 simple(struct db *, const char *);

/* Hands every notification libpq has queued to the listener. */
static void
drain(struct db *db)
{
	PGnotify	*n;
	int		 count = 0;
	bool		 own, own_rest = false;

	if (db->conn == NULL)
		return;
	/*
	 * Past DRAIN_EACH in one go (a re-encryption, a purge), the rest is
	 * handed over as one "*": cheaper than each of them.
	 */
	while ((n = PQnotifies(db->conn)) != NULL) {
		own = n->be_pid == PQbackendPID(db->conn);
		if (++count <= DRAIN_EACH && db->notified != NULL)
			db->notified(db->notified_arg, n->extra, own);
		else
			own_rest |= own;
		PQfreemem(n);
	}
	if (count > DRAIN_EACH && db->notified != NULL)
		db->notified(db->notified_arg, "*", own_rest);
}

int
db_listen(struct db *db, const char *channel,
    void (*fn)(void *, const char *, bool), void *arg)
{
	size_t	 i, n = strlen(channel);

	/* An identifier written into SQL: letters, digits and '_' only. */
	if (n == 0 || n >= sizeof(db->channel))
		return -1;
	for (i = 0; i < n; i++)
		if (!((channel[i] >= 'a' && channel[i] <= 'z') ||
		    (channel[i] >= '0' && channel[i] <= '9') ||
		    channel[i] == '_'))
			return -1;
	memcpy(db->channel, channel, n + 1);
	db->notified = fn;
	db->notified_arg = arg;
	/* A connection made before this call does not listen yet. */
	disconnect(db);
	return 0;
}

/*
 * Subscribes a fresh connection.  Whatever was notified while there was
 * no connection is unknown, so the listener hears of a new connection as
 * of a notification.
 */
static int
subscribe(struct db *db)
{
	PGresult	*res;
	char		 sql[sizeof(db->channel) + 16];
	int		 rc = 0;

	if (db->channel[0] == '\0')
		return 0;
	snprintf(sql, sizeof(sql), "LISTEN %s", db->channel);
	res = PQexec(db->conn, sql);
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
		rc = -1;
	PQclear(res);
	/*
	 * As if this handle had made the change: a change committed just
	 * before the old connection died may never have been heard.
	 */
	if (rc == 0 && db->notified != NULL)
		db->notified(db->notified_arg, "*", true);
	return rc;
}

int
db_poll(struct db *db)
{
	struct pollfd	 pfd;
	int		 n, i;

	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK)
		return -1;
	/*
	 * A server that went away has closed the socket; libpq would only
	 * learn it from the next read, after the last message it sent.
	 */
	/*
	 * Everything that has arrived, not one buffer of it: a change must
	 * not wait behind a burst of others.  A burst that does not end
	 * is caught by the round trip below.
	 */
	for (i = 0; i < POLL_READS; i++) {
		pfd.fd = PQsocket(db->conn);
		pfd.events = POLLIN | POLLRDHUP;
		pfd.revents = 0;
		while ((n = poll(&pfd, 1, 0)) == -1 && errno == EINTR)
			continue;
		if (pfd.fd == -1 || n == -1 || (pfd.revents &
		    (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0 ||
		    ((pfd.revents & POLLIN) != 0 &&
		    PQconsumeInput(db->conn) == 0) ||
		    PQstatus(db->conn) != CONNECTION_OK) {
			set_error(db, DB_UNAVAILABLE, NULL, "the connection "
			    "to PostgreSQL was closed");
			disconnect(db);
			return -1;
		}
		drain(db);
		if ((pfd.revents & POLLIN) == 0)
			break;
	}
	/*
	 * One that vanished without a word is only found by asking: after
	 * DB_QUIET seconds without an answer (or a burst too long to read
	 * here), a round trip vouches for it and reads what came before.
	 */
	if ((i == POLL_READS || clock_mono() - db->last_answer > DB_QUIET) &&
	    simple(db, "SELECT 1") == -1)
		return -1;
	return 0;
}

int
db_connect(struct db *db)
{
	/*
	 * Our defaults come first so that the operator's conninfo, expanded
	 * from "dbname", can override them.
	 */
	/*
	 * Over TCP, a server that vanished without closing the connection
	 * (a crash, a partition) is given up within seconds, not the
	 * minutes TCP would wait.
	 */
	const char *const kw[] = { "connect_timeout", "application_name",
	    "keepalives", "keepalives_idle", "keepalives_interval",
	    "keepalives_count", "tcp_user_timeout", "options", "dbname",
	    NULL };
	const char *const val[] = { db->timeout, db->appname, "1", "5", "2",
	    "3", "10000", db->options, db->conninfo, NULL };
	double	 now;

	if (db->conn != NULL && PQstatus(db->conn) == CONNECTION_OK) {
		db->status = DB_OK;
		return 0;
	}
	disconnect(db);
	now = clock_mono();
	if (now < db->next_attempt) {
		db->status = DB_UNAVAILABLE;
		return -1;
	}
	db->conn = PQconnectdbParams(kw, val, 1);
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
		set_error(db, DB_UNAVAILABLE, NULL, db->conn != NULL ?
		    PQerrorMessage(db->conn) : "out of memory");
		disconnect(db);
		db->next_attempt = now + RECONNECT_INTERVAL;
		return -1;
	}
	PQsetNoticeProcessor(db->conn, ignore_notice, NULL);
	if (apply_setting(db) == -1 || subscribe(db) == -1) {
		set_error(db, DB_UNAVAILABLE, NULL, PQerrorMessage(db->conn));
		disconnect(db);
		db->next_attempt = now + RECONNECT_INTERVAL;
		return -1;
	}
	db->next_attempt = 0;
	db->status = DB_OK;
	db->connects++;
	if (db->connected_once)
		db->reconnects++;
	db->connected_once = true;
	return 0;
}

unsigned long
db_connects(const struct db *db)
{
	return db->connects;
}

void
db_retry_now(struct db *db)
{
	db->next_attempt = 0;
}

unsigned long
db_reconnects(const struct db *db)
{
	return db != NULL ? db->reconnects : 0;
}

/*
 * Records why res failed.  A broken connection is dropped so that the next
 * call reconnects.
 */
static void
note_failure(struct db *db, const PGresult *res)
{
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
		set_error(db, DB_UNAVAILABLE, NULL, db->conn != NULL ?
		    PQerrorMessage(db->conn) : "not connected");
		disconnect(db);
		return;
	}
	set_error(db, DB_ERROR,
	    res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL,
	    res != NULL ? PQresultErrorMessage(res) :
	    PQerrorMessage(db->conn));
	/*
	 * A statement or lock timeout (or a cancel) is the server being
	 * unable to answer in time, not a wrong statement: the caller
	 * answers 503 as for a server that is down, on a connection that
	 * still works.
	 */
	if (strcmp(db->sqlstate, "57014") == 0 ||
	    strcmp(db->sqlstate, "55P03") == 0)
		db->status = DB_UNAVAILABLE;
}

static int
prepare(struct db *db, enum stmt s)
{
	PGresult	*res;
	int		 rc = -1;

	if (db->prepared[s])
		return 0;
	res = PQprepare(db->conn, stmts[s].name, stmts[s].sql, 0, NULL);
	if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
		db->prepared[s] = true;
		rc = 0;
	} else {
		char msg[sizeof(db->errmsg) + 64];

		note_failure(db, res);
		snprintf(msg, sizeof(msg), "%s: %s", stmts[s].name,
		    db->errmsg);
		snprintf(db->errmsg, sizeof(db->errmsg), "%.*s",
		    (int)sizeof(db->errmsg) - 1, msg);
	}
	PQclear(res);
	return rc;
}

int
db_prepare_all(struct db *db)
{
	int	 s;

	for (s = 0; s < STMT__MAX; s++)
		if (stmts[s].sql == NULL) {
			set_error(db, DB_ERROR, NULL, "statement table has a "
			    "hole: a build error");
			return -1;
		}
	if (db_connect(db) == -1)
		return -1;
	for (s = 0; s < STMT__MAX; s++)
		if (prepare(db, (enum stmt)s) == -1)
			return -1;
	return 0;
}

static PGresult *
run(struct db *db, enum stmt s, int n, const char *const *params)
{
	PGresult	*res;
	ExecStatusType	 st;

	if (db_connect(db) == -1 || prepare(db, s) == -1)
		return NULL;
	res = PQexecPrepared(db->conn, stmts[s].name, n, params, NULL, NULL,
	    0);
	drain(db);
	st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		db->status = DB_OK;
		db->last_answer = clock_mono();
		return res;
	}
	note_failure(db, res);
	PQclear(res);
	return NULL;
}

struct db_res *
db_query(struct db *db, enum stmt s, int n, const char *const *params)
{
	PGresult	*res;
	bool		 was_connected = db->conn != NULL, in_tx = db->in_tx;

	res = run(db, s, n, params);
	/*
	 * A connection that died since the last request (PostgreSQL
	 * restarted) is only noticed now.  Outside a transaction nothing
	 * was done, so one retry on a fresh connection is safe, except for
	 * a statement that may have committed before the connection died.
	 */
	if (res == NULL && db->status == DB_UNAVAILABLE && was_connected &&
	    !in_tx && !stmts[s].once) {
		db->next_attempt = 0;
		res = run(db, s, n, params);
	}
	return (struct db_res *)res;
}

int
db_query_count(struct db *db, enum stmt s, int n, const char *const *params)
{
	struct db_res	*res;
	int		 rows;

	if ((res = db_query(db, s, n, params)) == NULL)
		return -1;
	rows = db_rows(res);
	db_res_free(res);
	return rows;
}

void
db_param_change(const char **p, const char *value, const char *absent)
{
	p[0] = value != NULL ? "true" : "false";
	p[1] = value != NULL ? value : absent;
}

struct db_res *
db_query_page(struct db *db, enum stmt s, const char *owner,
    const char *cursor, int limit)
{
	const char	*p[3];
	char		 lim[16];

	snprintf(lim, sizeof(lim), "%d", limit);
	p[0] = owner;
	p[1] = cursor;
	p[2] = lim;
	return db_query(db, s, 3, p);
}

int
db_exec(struct db *db, enum stmt s, int n, const char *const *params)
{
	struct db_res	*res;

	if ((res = db_query(db, s, n, params)) == NULL)
		return -1;
	db_res_free(res);
	return 0;
}

static int
simple(struct db *db, const char *sql)
{
	PGresult	*res;
	int		 rc = -1;

	if (db_connect(db) == -1)
		return -1;
	res = PQexec(db->conn, sql);
	drain(db);
	if (res != NULL && (PQresultStatus(res) == PGRES_COMMAND_OK ||
	    PQresultStatus(res) == PGRES_TUPLES_OK)) {
		db->status = DB_OK;
		db->last_answer = clock_mono();
		rc = 0;
	} else
		note_failure(db, res);
	PQclear(res);
	return rc;
}

int
db_exec_script(struct db *db, const char *sql)
{
	return simple(db, sql);
}

int
db_each_row(struct db *db, enum stmt s, int n, const char *const *params,
    int (*fn)(void *arg, const struct db_res *row), void *arg)
{
	PGresult	*res;
	PGcancel	*cancel;
	char		 why[256];
	int		 rc = 0;

	if (db_connect(db) == -1 || prepare(db, s) == -1)
		return -1;
	if (PQsendQueryPrepared(db->conn, stmts[s].name, n, params, NULL, NULL,
	    0) == 0 || PQsetSingleRowMode(db->conn) == 0) {
		note_failure(db, NULL);
		while ((res = PQgetResult(db->conn)) != NULL)
			PQclear(res);
		return -1;
	}
	db->status = DB_OK;
	/* Every result is read, whatever happens: the connection is reused. */
	while ((res = PQgetResult(db->conn)) != NULL) {
		switch (PQresultStatus(res)) {
		case PGRES_SINGLE_TUPLE:
			if (rc == 0 && fn(arg, (const struct db_res *)res) == -1) {
				rc = 1;
				if ((cancel = PQgetCancel(db->conn)) != NULL) {
					(void)PQcancel(cancel, why, sizeof(why));
					PQfreeCancel(cancel);
				}
			}
			break;
		case PGRES_TUPLES_OK:
			db->last_answer = clock_mono();
			break;
		default:
			/* The cancel we asked for is no failure. */
			if (rc == 0) {
				note_failure(db, res);
				rc = -1;
			}
			break;
		}
		PQclear(res);
	}
	drain(db);
	if (rc == 0 && PQstatus(db->conn) != CONNECTION_OK) {
		note_failure(db, NULL);
		rc = -1;
	}
	return rc;
}

int
db_begin_snapshot(struct db *db)
{
	if (simple(db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") ==
	    -1)
		return -1;
	db->in_tx = true;
	return 0;
}

int
db_begin(struct db *db)
{
	if (simple(db, "BEGIN") == -1)
		return -1;
	db->in_tx = true;
	return 0;
}

int
db_commit(struct db *db)
{
	int	 rc;

	rc = simple(db, "COMMIT");
	db->in_tx = false;
	return rc;
}

bool
db_in_transaction(const struct db *db)
{
	return db->in_tx;
}

void
db_rollback(struct db *db)
{
	PGresult	*res;

	if (db->conn != NULL && PQstatus(db->conn) == CONNECTION_OK &&
	    PQtransactionStatus(db->conn) != PQTRANS_IDLE) {
		res = PQexec(db->conn, "ROLLBACK");
		PQclear(res);
	}
	db->in_tx = false;
}

int
db_rows(const struct db_res *r)
{
	return PQntuples((const PGresult *)r);
}

const char *
db_value(const struct db_res *r, int row, int col)
{
	return PQgetvalue((const PGresult *)r, row, col);
}

bool
db_isnull(const struct db_res *r, int row, int col)
{
	return PQgetisnull((const PGresult *)r, row, col) != 0;
}

void
db_res_free(struct db_res *r)
{
	PQclear((PGresult *)r);
}

enum db_status
db_status(const struct db *db)
{
	return db->status;
}

const char *
db_sqlstate(const struct db *db)
{
	return db->sqlstate;
}

const char *
db_errmsg(const struct db *db)
{
	return db->errmsg;
}

int
db_schema_version(struct db *db, int *version)
{
	PGresult	*res;
	int		 rc = -1;

	if (db_connect(db) == -1)
		return -1;
	res = PQexec(db->conn, "SELECT coalesce(max(version), 0) "
	    "FROM schema_migrations");
	if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
		*version = atoi(PQgetvalue(res, 0, 0));
		db->status = DB_OK;
		rc = 0;
	} else if (res != NULL && PQstatus(db->conn) == CONNECTION_OK &&
	    strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE) ?
	    PQresultErrorField(res, PG_DIAG_SQLSTATE) : "", "42P01") == 0) {
		/* undefined_table: never migrated */
		*version = 0;
		db->status = DB_OK;
		rc = 0;
	} else
		note_failure(db, res);
	PQclear(res);
	return rc;
}

const char *
db_stmt_name(enum stmt s)
{
	return stmts[s].name;
}

const char *
db_stmt_sql(enum stmt s)
{
	return stmts[s].sql;
}

int
db_stmt_nparams(enum stmt s)
{
	return stmts[s].nparams;
}
