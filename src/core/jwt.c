#include "autoconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/jwt.h"
#include "core/scope.h"
#include "lib/base64.h"
#include "lib/crypto.h"
#include "lib/json.h"

const char *const jwt_result_names[JWT_RESULT__MAX] = {
	"ok",			/* JWT_OK */
	"malformed",		/* JWT_MALFORMED */
	"bad_alg",		/* JWT_BAD_ALG */
	"bad_signature",	/* JWT_BAD_SIGNATURE */
	"no_exp",		/* JWT_NO_EXP */
	"expired",		/* JWT_EXPIRED */
	"not_yet_valid",	/* JWT_NOT_YET_VALID */
	"bad_claims",		/* JWT_BAD_CLAIMS */
};

#define JWT_MAX_PART 8192

bool
jwt_looks_like(const char *t)
{
	const char *a = strchr(t, '.'), *b;

	return a != NULL && (b = strchr(a + 1, '.')) != NULL &&
	    strchr(b + 1, '.') == NULL;
}

/* Decodes one part and parses it as a JSON object. */
static struct json_object *
part_json(const char *p, size_t n)
{
	uint8_t	 buf[JWT_MAX_PART];
	long	 len;
	enum json_parse_error why;
	char	 err[128];
	struct json_object *o;

	if (n > sizeof(buf) * 4 / 3 ||
	    (len = base64_decode(p, n, true, buf, sizeof(buf))) <= 0)
		return NULL;
	o = json_parse((const char *)buf, (size_t)len, &why, err, sizeof(err));
	if (o != NULL && !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = NULL;
	}
	return o;
}

/* A NumericDate claim: 1 read, 0 absent, -1 malformed. */
static int
numeric_date(struct json_object *payload, const char *name, long long *out)
{
	struct json_object *v;

	if (!json_object_object_get_ex(payload, name, &v))
		return 0;
	if (json_object_is_type(v, json_type_int)) {
		*out = json_object_get_int64(v);
		return 1;
	}
	if (json_object_is_type(v, json_type_double)) {
		*out = (long long)json_object_get_double(v);
		return 1;
	}
	return -1;
}

static int
add_scope(struct jwt_claims *c, const char *s, size_t n)
{
	char	 one[64];
	size_t	 used = strlen(c->scopes);

	if (n == 0)
		return 0;
	if (n >= sizeof(one))
		return -1;
	memcpy(one, s, n);
	one[n] = '\0';
	if (!scope_valid(one) || used + n + 2 > sizeof(c->scopes))
		return -1;
	if (used > 0)
		c->scopes[used++] = ',';
	memcpy(c->scopes + used, one, n + 1);
	return 0;
}

/*
 * A UUID in its canonical form, lower case, into out (37 bytes at least):
 * the same tenant must be the same string everywhere it is compared.
 * 0, or -1 when s is no UUID.
 */
static int
uuid_lower(const char *s, char *out, size_t outsz)
{
	size_t	 i;

	if (strlen(s) != 36 || outsz < 37)
		return -1;
	for (i = 0; i < 36; i++) {
		char	 ch = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (ch != '-')
				return -1;
		} else if (ch >= 'A' && ch <= 'F')
			ch = (char)(ch - 'A' + 'a');
		else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return -1;
		out[i] = ch;
	}
	out[36] = '\0';
	return 0;
}

static enum jwt_result
read_claims(struct json_object *payload, long leeway, time_t now,
    struct jwt_claims *c)
{
	struct json_object *v;
	const char	*s, *sp;
	size_t		 i;
	int		 rc;

	if ((rc = numeric_date(payload, "exp", &c->exp)) == 0)
		return JWT_NO_EXP;
	if (rc == -1 || (rc = numeric_date(payload, "nbf", &c->nbf)) == -1)
		return JWT_BAD_CLAIMS;
	if ((long long)now > c->exp + leeway)
		return JWT_EXPIRED;
	if (rc == 1 && (long long)now + leeway < c->nbf)
		return JWT_NOT_YET_VALID;

	if (!json_object_object_get_ex(payload, "sub", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    (size_t)json_object_get_string_len(v) >= sizeof(c->sub) ||
	    json_object_get_string_len(v) == 0)
		return JWT_BAD_CLAIMS;
	snprintf(c->sub, sizeof(c->sub), "%s", json_object_get_string(v));
	if (!json_object_object_get_ex(payload, "tenant_id", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    json_object_get_string_len(v) != 36 ||
	    uuid_lower(json_object_get_string(v), c->tenant_id,
	    sizeof(c->tenant_id)) == -1)
		return JWT_BAD_CLAIMS;

	/* scopes: an array of strings, or one space-separated string. */
	if (!json_object_object_get_ex(payload, "scopes", &v) || v == NULL)
		return JWT_OK;
	c->has_scopes = true;
	if (json_object_is_type(v, json_type_string)) {
		s = json_object_get_string(v);
		while (*s != '\0') {
			sp = strchr(s, ' ');
			if (sp == NULL)
				sp = s + strlen(s);
			if (add_scope(c, s, (size_t)(sp - s)) == -1)
				return JWT_BAD_CLAIMS;
			s = *sp == ' ' ? sp + 1 : sp;
		}
		return JWT_OK;
	}
	if (!json_object_is_type(v, json_type_array))
		return JWT_BAD_CLAIMS;
	for (i = 0; i < json_object_array_length(v); i++) {
		struct json_object *e = json_object_array_get_idx(v, i);

		if (!json_object_is_type(e, json_type_string) ||
		    add_scope(c, json_object_get_string(e),
		    (size_t)json_object_get_string_len(e)) == -1)
			return JWT_BAD_CLAIMS;
	}
	return JWT_OK;
}

enum jwt_result
jwt_verify(const char *token, const char *secret, long leeway, time_t now,
    struct jwt_claims *c)
{
	struct json_object *header = NULL, *payload = NULL, *alg;
	const char	*d1, *d2;
	uint8_t		 sig[64], mac[CRYPTO_SHA256_LEN];
	long		 siglen;
	enum jwt_result	 rc = JWT_MALFORMED;

	memset(c, 0, sizeof(*c));
	if (!jwt_looks_like(token))
		return JWT_MALFORMED;
	d1 = strchr(token, '.');
	d2 = strchr(d1 + 1, '.');
	if ((header = part_json(token, (size_t)(d1 - token))) == NULL)
		goto out;
	if (!json_object_object_get_ex(header, "alg", &alg) ||
	    !json_object_is_type(alg, json_type_string) ||
	    strcmp(json_object_get_string(alg), "HS256") != 0) {
		rc = JWT_BAD_ALG;
		goto out;
	}
	siglen = base64_decode(d2 + 1, strlen(d2 + 1), true, sig,
	    sizeof(sig));
	if (siglen != CRYPTO_SHA256_LEN)
		goto out;
	if (crypto_hmac_sha256(secret, strlen(secret), token,
	    (size_t)(d2 - token), mac) == -1 ||
	    !crypto_equal(mac, sig, sizeof(mac))) {
		rc = JWT_BAD_SIGNATURE;
		goto out;
	}
	if ((payload = part_json(d1 + 1, (size_t)(d2 - d1 - 1))) == NULL)
		goto out;
	rc = read_claims(payload, leeway, now, c);
out:
	if (header != NULL)
		json_object_put(header);
	if (payload != NULL)
		json_object_put(payload);
	explicit_bzero(mac, sizeof(mac));
	if (rc != JWT_OK)
		memset(c, 0, sizeof(*c));
	return rc;
}

int
jwt_sign(const char *payload_json, const char *secret, char *out,
    size_t outsz)
{
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	uint8_t		 mac[CRYPTO_SHA256_LEN];
	size_t		 n, pl = strlen(payload_json);

	if (outsz < (sizeof(header) + pl + 2) * 4 / 3 + 64)
		return -1;
	n = base64url_encode((const uint8_t *)header, sizeof(header) - 1, out);
	out[n++] = '.';
	n += base64url_encode((const uint8_t *)payload_json, pl, out + n);
	if (crypto_hmac_sha256(secret, strlen(secret), out, n, mac) == -1)
		return -1;
	out[n++] = '.';
	base64url_encode(mac, sizeof(mac), out + n);
	return 0;
}
