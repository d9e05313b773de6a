/*
 * Unit tests for src/core/auth.c: the credential a request carries, the
 * scopes a principal holds, and an API key checked against its row: its
 * shape first, with no database work, then its HMAC, whether it is usable
 * and until when, from the cache when it holds the row.  The key_lookup
 * statement is answered by the database functions below, from one row
 * (lib/db.c is then not linked in).
 */
#include "../unit.h"

#include "core/apikey.h"
#include "core/auth.h"
#include "core/keycache.h"
#include "server/config.h"

#include "../fake_db.h"

#define KEY_ID	"11111111-1111-1111-1111-111111111111"
#define TENANT	"22222222-2222-2222-2222-222222222222"

/* The columns of key_lookup, in its order. */
enum { ID, TENANT_ID, HASH, USABLE, SCOPES, RL_MAX, RL_WINDOW, ENV, PREFIX,
    STALE, ROLE, UNTIL, COLS };

static const char	*row[COLS];	/* the one key row */
static char		 row_prefix[APIKEY_PREFIX_MAX];
static char		 row_hash[2 * APIKEY_HASH_LEN + 1];
static char		 row_until[24];
static int		 queries;	/* key_lookup statements run */
static bool		 db_down;

int
db_poll(struct db *db)
{
	(void)db;
	return db_down ? -1 : 0;
}

enum db_status
db_status(const struct db *db)
{
	(void)db;
	return db_down ? DB_UNAVAILABLE : DB_OK;
}

struct db_res *
db_query(struct db *db, enum stmt st, int n, const char *const *p)
{
	struct db_res	*res;
	int		 col;

	(void)db;
	assert_int_equal(st, STMT_KEY_LOOKUP);
	assert_int_equal(n, 1);
	queries++;
	if (db_down)
		return NULL;
	res = fake_res(strcmp(p[0], row_prefix) == 0);
	for (col = 0; col < COLS; col++)
		fake_set(res, col, "%s", row[col]);
	return res;
}

static char	 secret[] = "unit-test-hmac-secret";
static char	 brand[] = "kg";
static char	 no_jwt[] = "";

/* A development or production config with what auth.c reads. */
static struct config
config(enum config_mode mode)
{
	struct config	 cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.mode = mode;
	cfg.hmac_secret = secret;
	cfg.key_brand = brand;
	cfg.jwt_secret = no_jwt;
	return cfg;
}

/* Makes key (APIKEY_MAX) and its row: usable, with scopes, stale. */
static void
key_and_row(char *key, const char *hmac_secret)
{
	struct apikey_parts parts;
	uint8_t		 mac[APIKEY_HASH_LEN];

	assert_int_equal(apikey_generate("kg", "live", key, APIKEY_MAX), 0);
	assert_int_equal(apikey_parse(key, "kg", &parts), 0);
	assert_int_equal(apikey_hash(hmac_secret, key, mac), 0);
	crypto_hex(mac, sizeof(mac), row_hash);
	snprintf(row_prefix, sizeof(row_prefix), "%s", parts.prefix);
	row_until[0] = '\0';
	row[ID] = KEY_ID;
	row[TENANT_ID] = TENANT;
	row[HASH] = row_hash;
	row[USABLE] = "t";
	row[SCOPES] = "api_keys:read,models:*";
	row[RL_MAX] = "100";
	row[RL_WINDOW] = "60";
	row[ENV] = "live";
	row[PREFIX] = row_prefix;
	row[STALE] = "t";
	row[ROLE] = "";
	row[UNTIL] = row_until;
	queries = 0;
	db_down = false;
}

static void
test_the_credential(void **state)
{
	(void)state;
	assert_string_equal(auth_credential("Bearer abc", NULL), "abc");
	assert_string_equal(auth_credential("bearer   abc", "x"), "abc");
	assert_string_equal(auth_credential("Bearer", "x"), "x");
	assert_null(auth_credential("Bearer   ", NULL));
	assert_string_equal(auth_credential("", "x"), "x");
	assert_null(auth_credential(NULL, ""));
	assert_null(auth_credential(NULL, NULL));
	/* Another scheme is the credential itself, to be refused. */
	assert_string_equal(auth_credential("Basic Zm9v", "x"), "Basic Zm9v");
	assert_string_equal(auth_credential("BearerX", "x"), "BearerX");
	assert_string_equal(auth_credential("Bearer\tabc", NULL),
	    "Bearer\tabc");
}

static void
test_scopes(void **state)
{
	struct principal p;
	char		 csv[2048];
	int		 i;

	(void)state;
	memset(&p, 0, sizeof(p));
	assert_int_equal(auth_set_scopes(&p, ",api_keys:*,,models:read,"), 0);
	assert_int_equal(p.nscopes, 2);
	assert_string_equal(p.scopes[1], "models:read");
	assert_true(auth_allows(&p, "api_keys:write"));
	assert_true(auth_allows(&p, "models:read"));
	assert_false(auth_allows(&p, "models:write"));
	assert_int_equal(auth_set_scopes(&p, ""), 0);
	assert_int_equal(p.nscopes, 0);
	assert_false(auth_allows(&p, "models:read"));
	/* AUTH_MAX_SCOPES fit, one more does not. */
	csv[0] = '\0';
	for (i = 0; i < AUTH_MAX_SCOPES; i++)
		strcat(csv, "a,");
	assert_int_equal(auth_set_scopes(&p, csv), 0);
	assert_int_equal(p.nscopes, AUTH_MAX_SCOPES);
	strcat(csv, "b");
	assert_int_equal(auth_set_scopes(&p, csv), -1);
	/* Text longer than the principal keeps. */
	memset(csv, 'a', sizeof(p.scope_buf));
	csv[sizeof(p.scope_buf)] = '\0';
	assert_int_equal(auth_set_scopes(&p, csv), -1);
	assert_int_equal(p.nscopes, 0);
	csv[sizeof(p.scope_buf) - 1] = '\0';
	assert_int_equal(auth_set_scopes(&p, csv), 0);
	assert_int_equal(p.nscopes, 1);
}

/* A key of the wrong shape is refused before any database work. */
static void
test_shape_first(void **state)
{
	struct config	 cfg = config(MODE_PRODUCTION);
	struct principal p;
	char		 key[APIKEY_MAX];

	(void)state;
	key_and_row(key, secret);
	assert_int_equal(auth_key(NULL, &cfg, NULL, NULL, &p), AUTH_MISSING);
	assert_int_equal(auth_key(NULL, &cfg, NULL, "", &p), AUTH_MISSING);
	key[strlen(key) - 1] ^= 1;		/* the checksum fails */
	assert_int_equal(auth_key(NULL, &cfg, NULL, key, &p), AUTH_INVALID);
	assert_int_equal(auth_key(NULL, &cfg, NULL, "Bearer x", &p),
	    AUTH_INVALID);
	/* The development key is not one in production. */
	assert_int_equal(auth_key(NULL, &cfg, NULL, APIKEY_DEV, &p),
	    AUTH_INVALID);
	assert_int_equal(queries, 0);
	/* The database down: 503, not a refusal. */
	key[strlen(key) - 1] ^= 1;
	db_down = true;
	assert_int_equal(auth_key(NULL, &cfg, NULL, key, &p),
	    AUTH_UNAVAILABLE);
}

static void
test_a_good_key(void **state)
{
	struct config	 cfg = config(MODE_PRODUCTION);
	struct principal p;
	char		 key[APIKEY_MAX];

	(void)state;
	key_and_row(key, secret);
	assert_int_equal(auth_key(NULL, &cfg, NULL, key, &p), AUTH_OK);
	assert_string_equal(p.key_id, KEY_ID);
	assert_string_equal(p.tenant_id, TENANT);
	assert_string_equal(p.key_prefix, row_prefix);
	assert_string_equal(p.env, "live");
	assert_string_equal(p.role_id, "");
	assert_int_equal(p.rate_limit_max, 100);
	assert_int_equal(p.rate_limit_window, 60);
	assert_int_equal(p.until, 0);
	assert_true(p.touch);			/* last_used_at is due */
	assert_int_equal(p.nscopes, 2);
	assert_true(auth_allows(&p, "models:read"));
	assert_false(auth_allows(&p, "api_keys:write"));
	/* A row read fresh: last_used_at not due yet. */
	row[STALE] = "f";
	assert_int_equal(auth_key(NULL, &cfg, NULL, key, &p), AUTH_OK);
	assert_false(p.touch);
	/* Usable until a time to come. */
	snprintf(row_until, sizeof(row_until), "%lld",
	    (long long)time(NULL) + 600);
	assert_int_equal(auth_key(NULL, &cfg, NULL, key, &p), AUTH_OK);
	assert_true(p.until > time(NULL));
	assert_int_equal(queries, 3);
}

/* Refused, and the principal left empty, whatever the reason. */
static void
test_refused_keys(void **state)
{
	struct config	 cfg = config(MODE_PRODUCTION);
	struct principal p;
	char		 key[APIKEY_MAX], other[APIKEY_MAX];

	(void)state;
	/* Hashed with another secret. */
	key_and_row(key, "another secret");
	assert_int_equal(auth_key(NULL, &cfg, NULL, key, &p), AUTH_INVALID);
	assert_string_equal(p.tenant_id, "");
	/* Revoked, or past its time. */
	key_and_row(key, secret);
	row[USABLE] = "f";
	assert_int_equal(auth_key(NULL, &cfg, NULL, key, &p), AUTH_INVALID);
	row[USABLE] = "t";
	snprintf(row_until, sizeof(row_until), "%lld",
	    (long long)time(NULL) - 1);
	assert_int_equal(auth_key(NULL, &cfg, NULL, key, &p), AUTH_INVALID);
	assert_int_equal(p.nscopes, 0);
	/* No row for its prefix. */
	assert_int_equal(apikey_generate("kg", "live", other, sizeof(other)),
	    0);
	assert_int_equal(auth_key(NULL, &cfg, NULL, other, &p), AUTH_INVALID);
	/* A row too long to copy is no row. */
	row_until[0] = '\0';
	row[ENV] = "much-too-long";
	assert_int_equal(auth_key(NULL, &cfg, NULL, key, &p), AUTH_INVALID);
	/* More scopes than a principal holds. */
	row[ENV] = "live";
	row[SCOPES] = "a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,"
	    "a,a,a,a,a,a,a";
	assert_int_equal(auth_key(NULL, &cfg, NULL, key, &p), AUTH_INVALID);
	assert_string_equal(p.key_id, "");
}

/* The development key, outside production, with its own HMAC secret. */
static void
test_the_development_key(void **state)
{
	struct config	 cfg = config(MODE_DEVELOPMENT);
	struct principal p;
	char		 key[APIKEY_MAX];
	uint8_t		 mac[APIKEY_HASH_LEN];

	(void)state;
	key_and_row(key, secret);
	snprintf(row_prefix, sizeof(row_prefix), "%s", APIKEY_DEV_PREFIX);
	assert_int_equal(apikey_hash(APIKEY_DEV_HMAC, APIKEY_DEV, mac), 0);
	crypto_hex(mac, sizeof(mac), row_hash);
	assert_int_equal(auth_key(NULL, &cfg, NULL, APIKEY_DEV, &p), AUTH_OK);
	assert_string_equal(p.key_id, KEY_ID);
	assert_int_equal(queries, 1);
}

/*
 * A cache serves a row it holds without a query while the database is
 * heard from; once it is not, the query is made and its failure is a 503.
 */
static void
test_from_the_cache(void **state)
{
	struct config	 cfg = config(MODE_PRODUCTION);
	struct keycache	*kc = keycache_new(NULL);
	struct principal p;
	char		 key[APIKEY_MAX], other[APIKEY_MAX];

	(void)state;
	assert_non_null(kc);
	key_and_row(key, secret);
	assert_int_equal(auth_key(NULL, &cfg, kc, key, &p), AUTH_OK);
	assert_true(p.touch);
	assert_int_equal(auth_key(NULL, &cfg, kc, key, &p), AUTH_OK);
	assert_false(p.touch);		/* touched a moment ago */
	assert_int_equal(queries, 1);
	/* An unknown prefix is remembered as such. */
	assert_int_equal(apikey_generate("kg", "live", other, sizeof(other)),
	    0);
	assert_int_equal(auth_key(NULL, &cfg, kc, other, &p), AUTH_INVALID);
	assert_int_equal(auth_key(NULL, &cfg, kc, other, &p), AUTH_INVALID);
	assert_int_equal(queries, 2);
	/* The wrong secret for a cached row: refused from the cache too. */
	cfg.hmac_secret = brand;
	assert_int_equal(auth_key(NULL, &cfg, kc, key, &p), AUTH_INVALID);
	assert_int_equal(queries, 2);
	cfg.hmac_secret = secret;
	db_down = true;
	assert_int_equal(auth_key(NULL, &cfg, kc, key, &p), AUTH_UNAVAILABLE);
	assert_int_equal(queries, 3);
	keycache_free(kc);
}

/* No jwt_secret, no tokens; a token that does not verify: no query. */
static void
test_tokens_refused_before_the_database(void **state)
{
	struct config	 cfg = config(MODE_DEVELOPMENT);
	struct principal p;
	char		 jwt[] = "a-secret-of-32-bytes-or-more-0123456789";

	(void)state;
	queries = 0;
	assert_int_equal(auth_jwt(NULL, &cfg, "x.y.z", &p), AUTH_INVALID);
	cfg.jwt_secret = jwt;
	assert_int_equal(auth_jwt(NULL, &cfg, "x.y.z", &p), AUTH_INVALID);
	assert_int_equal(auth_jwt(NULL, &cfg, "", &p), AUTH_INVALID);
	assert_int_equal(queries, 0);
	assert_string_equal(p.tenant_id, "");
}

UNIT_MAIN(unit_crypto_setup,
    cmocka_unit_test(test_the_credential),
    cmocka_unit_test(test_scopes),
    cmocka_unit_test(test_shape_first),
    cmocka_unit_test(test_a_good_key),
    cmocka_unit_test(test_refused_keys),
    cmocka_unit_test(test_the_development_key),
    cmocka_unit_test(test_from_the_cache),
    cmocka_unit_test(test_tokens_refused_before_the_database))
