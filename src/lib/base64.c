#include "autoconfig.h"

#include "lib/base64.h"

static const char std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int
value(char c, bool url)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (url ? '-' : '+'))
		return 62;
	if (c == (url ? '_' : '/'))
		return 63;
	return -1;
}

long
base64_decode(const char *in, size_t n, bool url, uint8_t *out, size_t outsz)
{
	size_t	 i, o = 0;
	uint32_t acc = 0;
	int	 bits = 0, v, pad = 0;

	if (url ? n % 4 == 1 : n % 4 != 0)
		return -1;
	for (i = 0; i < n; i++) {
		/* Padding: standard only, and only in the last two places. */
		if (!url && in[i] == '=') {
			if (i + 2 < n)
				return -1;
			pad++;
			continue;
		}
		if (pad > 0 || (v = value(in[i], url)) < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == outsz)
				return -1;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	/* Leftover bits must be zero: one encoding per value. */
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		return -1;
	return (long)o;
}

/* Encodes with alphabet; pads with '=' to whole quanta when pad. */
static size_t
encode(const char *alphabet, bool pad, const uint8_t *in, size_t n,
    char *out)
{
	size_t	 i, o = 0;
	uint32_t acc = 0;
	int	 bits = 0;

	for (i = 0; i < n; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = alphabet[(acc >> bits) & 63];
		}
	}
	if (bits > 0)
		out[o++] = alphabet[(acc << (6 - bits)) & 63];
	while (pad && o % 4 != 0)
		out[o++] = '=';
	out[o] = '\0';
	return o;
}

size_t
base64url_encode(const uint8_t *in, size_t n, char *out)
{
	return encode(url_alphabet, false, in, n, out);
}

size_t
base64_encode(const uint8_t *in, size_t n, char *out)
{
	return encode(std_alphabet, true, in, n, out);
}
