/* Unit tests for src/lib/crypto.c: published vectors, refusals, fork. */
#include "../unit.h"

#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "lib/crypto.h"

/* Decodes lower- or upper-case hex into out; fails the test on bad input. */
static size_t
unhex(const char *s, uint8_t *out, size_t cap)
{
	size_t	 i, n = strlen(s);
	int	 hi, lo;

	assert_int_equal(n % 2, 0);
	assert_true(n / 2 <= cap);
	for (i = 0; i < n / 2; i++) {
		hi = s[2 * i];
		lo = s[2 * i + 1];
		hi = hi >= '0' && hi <= '9' ? hi - '0' :
		    hi >= 'a' && hi <= 'f' ? hi - 'a' + 10 :
		    hi >= 'A' && hi <= 'F' ? hi - 'A' + 10 : -1;
		lo = lo >= '0' && lo <= '9' ? lo - '0' :
		    lo >= 'a' && lo <= 'f' ? lo - 'a' + 10 :
		    lo >= 'A' && lo <= 'F' ? lo - 'A' + 10 : -1;
		assert_true(hi >= 0 && lo >= 0);
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return n / 2;
}

/* True when all n bytes of p equal c. */
static int
all_bytes(const uint8_t *p, size_t n, uint8_t c)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (p[i] != c)
			return 0;
	return 1;
}

/* ------------------------------------------------------------------ */
/* AES-256-GCM                                                         */
/* ------------------------------------------------------------------ */

#define GCM_MAX 128
#define FILL 0xa5

struct gcm_vec {
	const char	*name;
	const char	*key, *iv, *aad, *pt, *ct, *tag;
};

/*
 * D. McGrew and J. Viega, "The Galois/Counter Mode of Operation (GCM)",
 * revised submission to NIST, 2005, appendix B: the AES-256 test cases
 * with a 96-bit IV.
 */
static const struct gcm_vec gcm_spec[] = {
	{ "GCM spec test case 13",
	    "0000000000000000000000000000000000000000000000000000000000000000",
	    "000000000000000000000000",
	    "",
	    "",
	    "",
	    "530f8afbc74536b9a963b4f1c4cb738b" },
	{ "GCM spec test case 14",
	    "0000000000000000000000000000000000000000000000000000000000000000",
	    "000000000000000000000000",
	    "",
	    "00000000000000000000000000000000",
	    "cea7403d4d606b6e074ec5d3baf39d18",
	    "d0d1c8a799996bf0265b98b5d48ab919" },
	{ "GCM spec test case 15",
	    "feffe9928665731c6d6a8f9467308308"
	    "feffe9928665731c6d6a8f9467308308",
	    "cafebabefacedbaddecaf888",
	    "",
	    "d9313225f88406e5a55909c5aff5269a"
	    "86a7a9531534f7da2e4c303d8a318a72"
	    "1c3c0c95956809532fcf0e2449a6b525"
	    "b16aedf5aa0de657ba637b391aafd255",
	    "522dc1f099567d07f47f37a32a84427d"
	    "643a8cdcbfe5c0c97598a2bd2555d1aa"
	    "8cb08e48590dbb3da7b08b1056828838"
	    "c5f61e6393ba7a0abcc9f662898015ad",
	    "b094dac5d93471bdec1a502270e3cc6c" },
	{ "GCM spec test case 16",
	    "feffe9928665731c6d6a8f9467308308"
	    "feffe9928665731c6d6a8f9467308308",
	    "cafebabefacedbaddecaf888",
	    "feedfacedeadbeeffeedfacedeadbeef"
	    "abaddad2",
	    "d9313225f88406e5a55909c5aff5269a"
	    "86a7a9531534f7da2e4c303d8a318a72"
	    "1c3c0c95956809532fcf0e2449a6b525"
	    "b16aedf5aa0de657ba637b39",
	    "522dc1f099567d07f47f37a32a84427d"
	    "643a8cdcbfe5c0c97598a2bd2555d1aa"
	    "8cb08e48590dbb3da7b08b1056828838"
	    "c5f61e6393ba7a0abcc9f662",
	    "76fc6ece0f4e1768cddf8853bb2d551b" },
};

/*
 * Project Wycheproof, testvectors_v1/aes_gcm_test.json, the test group
 * with ivSize 96, keySize 256, tagSize 128; "result" : "valid".
 */
static const struct gcm_vec gcm_wycheproof[] = {
	{ "Wycheproof aes_gcm_test.json tcId 91 (Ktv)",
	    "92ace3e348cd821092cd921aa3546374299ab46209691bc28b8752d17f123c20",
	    "00112233445566778899aabb",
	    "00000000ffffffff",
	    "00010203040506070809",
	    "e27abdd2d2a53d2f136b",
	    "9a4a2579529301bcfb71c78d4060f52c" },
	{ "Wycheproof aes_gcm_test.json tcId 92 (Ktv)",
	    "29d3a44f8723dc640239100c365423a312934ac80239212ac3df3421a2098123",
	    "00112233445566778899aabb",
	    "aabbccddeeff",
	    "",
	    "",
	    "2a7d77fa526b8250cb296078926b5020" },
	{ "Wycheproof aes_gcm_test.json tcId 94",
	    "cc56b680552eb75008f5484b4cb803fa5063ebd6eab91f6ab6aef4916a766273",
	    "99e23ec48985bccdeeab60f1",
	    "",
	    "2a",
	    "06",
	    "633c1e9703ef744ffffb40edf9d14355" },
	{ "Wycheproof aes_gcm_test.json tcId 101",
	    "cdccfe3f46d782ef47df4e72f0c02d9c7f774def970d23486f11a57f54247f17",
	    "376187894605a8d45e30de51",
	    "956846a209e087ed",
	    "e28e0e9f9d22463ac0e42639b530f42102fded75",
	    "feca44952447015b5df1f456df8ca4bb4eee2ce2",
	    "082e91924deeb77880e1b1c84f9b8d30" },
	{ "Wycheproof aes_gcm_test.json tcId 128 (tag all ones)",
	    "00112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f",
	    "000000000000000000000000",
	    "",
	    "561008fa07a68f5c61285cd013464eaf",
	    "23293e9b07ca7d1b0cae7cc489a973b3",
	    "ffffffffffffffffffffffffffffffff" },
	{ "Wycheproof aes_gcm_test.json tcId 129 (tag all zero)",
	    "00112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f",
	    "ffffffffffffffffffffffff",
	    "",
	    "c6152244cea1978d3e0bc274cf8c0b3b",
	    "7cb6fc7c6abc009efe9551a99f36a421",
	    "00000000000000000000000000000000" },
};

/*
 * The same file and group, "result" : "invalid" (flag ModifiedTag): the
 * ciphertext is genuine, the tag has been tampered with.  Key, IV, AAD
 * (empty), message and ciphertext are shared by all of them.
 */
#define WP_MOD_KEY \
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define WP_MOD_IV	"505152535455565758595a5b"
#define WP_MOD_MSG	"202122232425262728292a2b2c2d2e2f"
#define WP_MOD_CT	"b2061457c0759fc1749f174ee1ccadfa"

static const struct {
	const char	*name, *tag;
} gcm_wycheproof_bad[] = {
	{ "tcId 130, flipped bit 0 in tag",
	    "9de8fef6d8ab1bf1bf887232eab590dd" },
	{ "tcId 137, flipped bit 63 in tag",
	    "9ce8fef6d8ab1b71bf887232eab590dd" },
	{ "tcId 148, flipped bit 127 in tag",
	    "9ce8fef6d8ab1bf1bf887232eab5905d" },
	{ "tcId 149, flipped bits 0 and 64 in tag",
	    "9de8fef6d8ab1bf1be887232eab590dd" },
	{ "tcId 152, all bits of tag flipped",
	    "631701092754e40e40778dcd154a6f22" },
	{ "tcId 153, tag changed to all zero",
	    "00000000000000000000000000000000" },
	{ "tcId 154, tag changed to all 1",
	    "ffffffffffffffffffffffffffffffff" },
	{ "tcId 155, msbs changed in tag",
	    "1c687e76582b9b713f08f2b26a35105d" },
	{ "tcId 156, lsbs changed in tag",
	    "9de9fff7d9aa1af0be897333ebb491dc" },
};

/*
 * Genuine GCM encryptions under IVs that are not 96 bits.  A general GCM
 * implementation accepts every one of them; crypto_gcm_open() must refuse
 * them all, tag and all being right.
 */
static const struct gcm_vec gcm_other_iv[] = {
	/* McGrew and Viega, appendix B, test case 17: a 64-bit IV. */
	{ "GCM spec test case 17 (8-byte IV)",
	    "feffe9928665731c6d6a8f9467308308"
	    "feffe9928665731c6d6a8f9467308308",
	    "cafebabefacedbad",
	    "feedfacedeadbeeffeedfacedeadbeef"
	    "abaddad2",
	    "d9313225f88406e5a55909c5aff5269a"
	    "86a7a9531534f7da2e4c303d8a318a72"
	    "1c3c0c95956809532fcf0e2449a6b525"
	    "b16aedf5aa0de657ba637b39",
	    "c3762df1ca787d32ae47c13bf19844cb"
	    "af1ae14d0b976afac52ff7d79bba9de0"
	    "feb582d33934a4f0954cc2363bc73f78"
	    "62ac430e64abe499f47c9b1f",
	    "3a337dbf46a792c45e454913fe2ea8f2" },
	/* McGrew and Viega, appendix B, test case 18: a 480-bit IV. */
	{ "GCM spec test case 18 (60-byte IV)",
	    "feffe9928665731c6d6a8f9467308308"
	    "feffe9928665731c6d6a8f9467308308",
	    "9313225df88406e555909c5aff5269aa"
	    "6a7a9538534f7da1e4c303d2a318a728"
	    "c3c0c95156809539fcf0e2429a6b5254"
	    "16aedbf5a0de6a57a637b39b",
	    "feedfacedeadbeeffeedfacedeadbeef"
	    "abaddad2",
	    "d9313225f88406e5a55909c5aff5269a"
	    "86a7a9531534f7da2e4c303d8a318a72"
	    "1c3c0c95956809532fcf0e2449a6b525"
	    "b16aedf5aa0de657ba637b39",
	    "5a8def2f0c9e53f1f75d7853659e2a20"
	    "eeb2b22aafde6419a058ab4f6f746bf4"
	    "0fc0c3b780f244452da3ebf1c5d82cde"
	    "a2418997200ef82e44ae7e3f",
	    "a44a8266ee1c8eb0c8b5d4cf5ae9f19a" },
	/* Wycheproof aes_gcm_test.json, group ivSize 128, keySize 256. */
	{ "Wycheproof aes_gcm_test.json tcId 257 (16-byte IV)",
	    "e7f7a48df99edd92b81f508618aa96526b279debd9ddb292d385ddbae80b2259",
	    "7ee376910f08f497aa6c3aa7113697fd",
	    "",
	    "5e51dbbb861b5ec60751c0996e00527f",
	    "469478d448f7e97d755541aa09ad95b0",
	    "254ada5cf662d90c5e11b2bd9c4db4c4" },
	{ "Wycheproof aes_gcm_test.json tcId 258 (16-byte IV)",
	    "4f84782bfbb64a973c3de3dcfa3430367fd68bc0b4c3b31e5d7c8141ba3e6a67",
	    "5d1bde6fa0994b33efd8f23f531248a7",
	    "",
	    "78cb6650a1908a842101ea85804fed00cc56fbdafafba0ef4d1ca607dcae57b6",
	    "cb960201fa5ad41d41d1c2c8037c71d52b72e76b16b589d71b976627c9734c9d",
	    "8dfce16467c3a6ebb3e7242c9a551962" },
	/* Wycheproof aes_gcm_test.json, group ivSize 120, keySize 256. */
	{ "Wycheproof aes_gcm_test.json tcId 263 (15-byte IV)",
	    "e98b0669a645eb14cd06df6968fc5f10edc9f54feed264e3d410cdc61b72ef51",
	    "17ca250fb733877556263223eadde1",
	    "",
	    "f384b3ed7b274641f5db60cf",
	    "fc213602aa423b87d7c2a874",
	    "36b15bab6923b17218fe1c24048e2391" },
};

/*
 * Opens with out prefilled and expects -1.  Whether refused up front (IV or
 * tag length) or failing authentication, out must be left untouched or
 * wiped: never any decrypted bytes.
 */
static void
open_fails(const uint8_t *key, const uint8_t *iv, size_t ivlen,
    const uint8_t *aad, size_t aadlen, const uint8_t *ct, size_t n,
    const uint8_t *tag, size_t taglen, const char *name, const char *what)
{
	uint8_t	 out[GCM_MAX];

	memset(out, FILL, sizeof(out));
	if (crypto_gcm_open(key, iv, ivlen, aadlen ? aad : NULL, aadlen, ct,
	    n, tag, taglen, out) != -1)
		fail_msg("%s: crypto_gcm_open accepted %s", name, what);
	if (!all_bytes(out, n, FILL) && !all_bytes(out, n, 0))
		fail_msg("%s: crypto_gcm_open left output behind after %s",
		    name, what);
	if (!all_bytes(out + n, sizeof(out) - n, FILL))
		fail_msg("%s: crypto_gcm_open wrote past n after %s", name,
		    what);
}

static void
gcm_check(const struct gcm_vec *v)
{
	uint8_t	 key[CRYPTO_KEY_LEN], iv[CRYPTO_GCM_IV_LEN];
	uint8_t	 aad[GCM_MAX], pt[GCM_MAX], ct[GCM_MAX];
	uint8_t	 tag[CRYPTO_GCM_TAG_LEN], gtag[CRYPTO_GCM_TAG_LEN];
	uint8_t	 out[GCM_MAX], bad[GCM_MAX], badtag[CRYPTO_GCM_TAG_LEN];
	uint8_t	 iv16[16], tag17[CRYPTO_GCM_TAG_LEN + 1], one = 0;
	uint8_t	 wrongkey[CRYPTO_KEY_LEN];
	char	 what[64];
	size_t	 aadlen, n, i;

	print_message("%s\n", v->name);
	assert_int_equal(unhex(v->key, key, sizeof(key)), CRYPTO_KEY_LEN);
	assert_int_equal(unhex(v->iv, iv, sizeof(iv)), CRYPTO_GCM_IV_LEN);
	assert_int_equal(unhex(v->tag, tag, sizeof(tag)), CRYPTO_GCM_TAG_LEN);
	aadlen = unhex(v->aad, aad, sizeof(aad));
	n = unhex(v->pt, pt, sizeof(pt));
	assert_int_equal(unhex(v->ct, ct, sizeof(ct)), n);

	/* Sealing gives the published ciphertext and tag. */
	memset(out, FILL, sizeof(out));
	memset(gtag, FILL, sizeof(gtag));
	assert_int_equal(crypto_gcm_seal(key, iv, aadlen ? aad : NULL, aadlen,
	    pt, n, out, gtag), 0);
	if (n > 0)
		assert_memory_equal(out, ct, n);
	assert_memory_equal(gtag, tag, CRYPTO_GCM_TAG_LEN);
	/* ... and writes nothing past n bytes. */
	assert_true(all_bytes(out + n, sizeof(out) - n, FILL));

	/* Opening recovers the plaintext. */
	memset(out, FILL, sizeof(out));
	assert_int_equal(crypto_gcm_open(key, iv, CRYPTO_GCM_IV_LEN,
	    aadlen ? aad : NULL, aadlen, ct, n, tag, CRYPTO_GCM_TAG_LEN, out),
	    0);
	if (n > 0)
		assert_memory_equal(out, pt, n);
	assert_true(all_bytes(out + n, sizeof(out) - n, FILL));

	/* Every single-bit change of the tag is refused. */
	for (i = 0; i < 8 * CRYPTO_GCM_TAG_LEN; i++) {
		memcpy(badtag, tag, sizeof(badtag));
		badtag[i / 8] ^= (uint8_t)(1u << (i % 8));
		snprintf(what, sizeof(what), "tag bit %zu flipped", i);
		open_fails(key, iv, CRYPTO_GCM_IV_LEN, aad, aadlen, ct, n,
		    badtag, CRYPTO_GCM_TAG_LEN, v->name, what);
	}

	/* A flipped bit in the first and in the last ciphertext byte. */
	if (n > 0) {
		memcpy(bad, ct, n);
		bad[0] ^= 0x01;
		open_fails(key, iv, CRYPTO_GCM_IV_LEN, aad, aadlen, bad, n,
		    tag, CRYPTO_GCM_TAG_LEN, v->name,
		    "ciphertext bit 0 flipped");
		memcpy(bad, ct, n);
		bad[n - 1] ^= 0x80;
		open_fails(key, iv, CRYPTO_GCM_IV_LEN, aad, aadlen, bad, n,
		    tag, CRYPTO_GCM_TAG_LEN, v->name,
		    "last ciphertext bit flipped");
		open_fails(key, iv, CRYPTO_GCM_IV_LEN, aad, aadlen, ct, n - 1,
		    tag, CRYPTO_GCM_TAG_LEN, v->name,
		    "the ciphertext one byte short");
	}

	/* Different AAD: a flipped bit, one byte short, none; or one added. */
	if (aadlen > 0) {
		memcpy(bad, aad, aadlen);
		bad[aadlen - 1] ^= 0x01;
		open_fails(key, iv, CRYPTO_GCM_IV_LEN, bad, aadlen, ct, n,
		    tag, CRYPTO_GCM_TAG_LEN, v->name, "an AAD bit flipped");
		open_fails(key, iv, CRYPTO_GCM_IV_LEN, aad, aadlen - 1, ct, n,
		    tag, CRYPTO_GCM_TAG_LEN, v->name, "the AAD one byte short");
		open_fails(key, iv, CRYPTO_GCM_IV_LEN, NULL, 0, ct, n,
		    tag, CRYPTO_GCM_TAG_LEN, v->name, "no AAD");
	} else
		open_fails(key, iv, CRYPTO_GCM_IV_LEN, &one, 1, ct, n,
		    tag, CRYPTO_GCM_TAG_LEN, v->name, "an AAD byte added");

	/* Another key, another IV. */
	memcpy(wrongkey, key, sizeof(wrongkey));
	wrongkey[31] ^= 0x01;
	open_fails(wrongkey, iv, CRYPTO_GCM_IV_LEN, aad, aadlen, ct, n, tag,
	    CRYPTO_GCM_TAG_LEN, v->name, "another key");
	memcpy(iv16, iv, CRYPTO_GCM_IV_LEN);
	iv16[0] ^= 0x01;
	open_fails(key, iv16, CRYPTO_GCM_IV_LEN, aad, aadlen, ct, n, tag,
	    CRYPTO_GCM_TAG_LEN, v->name, "another IV");

	/* Truncated and over-long tags are refused before decrypting. */
	open_fails(key, iv, CRYPTO_GCM_IV_LEN, aad, aadlen, ct, n, tag, 12,
	    v->name, "the tag truncated to 12 bytes");
	open_fails(key, iv, CRYPTO_GCM_IV_LEN, aad, aadlen, ct, n, tag, 15,
	    v->name, "the tag truncated to 15 bytes");
	open_fails(key, iv, CRYPTO_GCM_IV_LEN, aad, aadlen, ct, n, tag, 4,
	    v->name, "the tag truncated to 4 bytes");
	open_fails(key, iv, CRYPTO_GCM_IV_LEN, aad, aadlen, ct, n, tag, 0,
	    v->name, "an empty tag");
	memcpy(tag17, tag, CRYPTO_GCM_TAG_LEN);
	tag17[CRYPTO_GCM_TAG_LEN] = 0;
	open_fails(key, iv, CRYPTO_GCM_IV_LEN, aad, aadlen, ct, n, tag17, 17,
	    v->name, "a 17-byte tag");

	/* IVs other than 12 bytes are refused, the right prefix or not. */
	memcpy(iv16, iv, CRYPTO_GCM_IV_LEN);
	memset(iv16 + CRYPTO_GCM_IV_LEN, 0, sizeof(iv16) - CRYPTO_GCM_IV_LEN);
	open_fails(key, iv16, 8, aad, aadlen, ct, n, tag, CRYPTO_GCM_TAG_LEN,
	    v->name, "an 8-byte IV");
	open_fails(key, iv16, 16, aad, aadlen, ct, n, tag, CRYPTO_GCM_TAG_LEN,
	    v->name, "a 16-byte IV");
	open_fails(key, iv16, 11, aad, aadlen, ct, n, tag, CRYPTO_GCM_TAG_LEN,
	    v->name, "an 11-byte IV");
	open_fails(key, iv16, 13, aad, aadlen, ct, n, tag, CRYPTO_GCM_TAG_LEN,
	    v->name, "a 13-byte IV");
	open_fails(key, iv16, 0, aad, aadlen, ct, n, tag, CRYPTO_GCM_TAG_LEN,
	    v->name, "an empty IV");

	/* After all that the genuine message still opens. */
	memset(out, FILL, sizeof(out));
	assert_int_equal(crypto_gcm_open(key, iv, CRYPTO_GCM_IV_LEN,
	    aadlen ? aad : NULL, aadlen, ct, n, tag, CRYPTO_GCM_TAG_LEN, out),
	    0);
	if (n > 0)
		assert_memory_equal(out, pt, n);
}

static void
test_gcm_spec_vectors(void **state)
{
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(gcm_spec) / sizeof(gcm_spec[0]); i++)
		gcm_check(&gcm_spec[i]);
}

static void
test_gcm_wycheproof_valid(void **state)
{
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(gcm_wycheproof) / sizeof(gcm_wycheproof[0]);
	    i++)
		gcm_check(&gcm_wycheproof[i]);
}

static void
test_gcm_wycheproof_modified_tag(void **state)
{
	uint8_t	 key[CRYPTO_KEY_LEN], iv[CRYPTO_GCM_IV_LEN];
	uint8_t	 msg[16], ct[16], tag[CRYPTO_GCM_TAG_LEN], out[16];
	uint8_t	 gtag[CRYPTO_GCM_TAG_LEN];
	size_t	 i;

	(void)state;
	assert_int_equal(unhex(WP_MOD_KEY, key, sizeof(key)), sizeof(key));
	assert_int_equal(unhex(WP_MOD_IV, iv, sizeof(iv)), sizeof(iv));
	assert_int_equal(unhex(WP_MOD_MSG, msg, sizeof(msg)), sizeof(msg));
	assert_int_equal(unhex(WP_MOD_CT, ct, sizeof(ct)), sizeof(ct));

	/* The ciphertext in these vectors is the genuine one. */
	assert_int_equal(crypto_gcm_seal(key, iv, NULL, 0, msg, sizeof(msg),
	    out, gtag), 0);
	assert_memory_equal(out, ct, sizeof(ct));

	for (i = 0; i < sizeof(gcm_wycheproof_bad) /
	    sizeof(gcm_wycheproof_bad[0]); i++) {
		print_message("Wycheproof aes_gcm_test.json %s\n",
		    gcm_wycheproof_bad[i].name);
		assert_int_equal(unhex(gcm_wycheproof_bad[i].tag, tag,
		    sizeof(tag)), sizeof(tag));
		assert_false(crypto_equal(tag, gtag, sizeof(tag)));
		open_fails(key, iv, CRYPTO_GCM_IV_LEN, NULL, 0, ct, sizeof(ct),
		    tag, sizeof(tag), "Wycheproof aes_gcm_test.json",
		    gcm_wycheproof_bad[i].name);
	}
}

static void
test_gcm_other_iv_lengths_refused(void **state)
{
	uint8_t	 key[CRYPTO_KEY_LEN], iv[64], aad[GCM_MAX], ct[GCM_MAX];
	uint8_t	 tag[CRYPTO_GCM_TAG_LEN];
	size_t	 i, ivlen, aadlen, n;

	(void)state;
	for (i = 0; i < sizeof(gcm_other_iv) / sizeof(gcm_other_iv[0]); i++) {
		print_message("%s\n", gcm_other_iv[i].name);
		assert_int_equal(unhex(gcm_other_iv[i].key, key, sizeof(key)),
		    CRYPTO_KEY_LEN);
		ivlen = unhex(gcm_other_iv[i].iv, iv, sizeof(iv));
		assert_int_not_equal(ivlen, CRYPTO_GCM_IV_LEN);
		aadlen = unhex(gcm_other_iv[i].aad, aad, sizeof(aad));
		n = unhex(gcm_other_iv[i].ct, ct, sizeof(ct));
		assert_int_equal(unhex(gcm_other_iv[i].tag, tag, sizeof(tag)),
		    CRYPTO_GCM_TAG_LEN);
		open_fails(key, iv, ivlen, aad, aadlen, ct, n, tag,
		    CRYPTO_GCM_TAG_LEN, gcm_other_iv[i].name,
		    "a genuine message under a non-96-bit IV");
	}
}

/* Round trips over lengths around the block size, random key and IV. */
static void
test_gcm_round_trip(void **state)
{
	static const size_t lens[] = { 1, 15, 16, 17, 31, 32, 33, 64, 100,
	    GCM_MAX };
	uint8_t	 key[CRYPTO_KEY_LEN], iv[CRYPTO_GCM_IV_LEN];
	uint8_t	 aad[20], pt[GCM_MAX], ct[GCM_MAX], out[GCM_MAX];
	uint8_t	 tag[CRYPTO_GCM_TAG_LEN], tag2[CRYPTO_GCM_TAG_LEN];
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		crypto_random(key, sizeof(key));
		crypto_random(iv, sizeof(iv));
		crypto_random(aad, sizeof(aad));
		crypto_random(pt, lens[i]);
		assert_int_equal(crypto_gcm_seal(key, iv, aad, sizeof(aad),
		    pt, lens[i], ct, tag), 0);
		assert_int_equal(crypto_gcm_open(key, iv, CRYPTO_GCM_IV_LEN,
		    aad, sizeof(aad), ct, lens[i], tag, sizeof(tag), out), 0);
		assert_memory_equal(out, pt, lens[i]);
		/* Deterministic for the same key, IV and input. */
		assert_int_equal(crypto_gcm_seal(key, iv, aad, sizeof(aad),
		    pt, lens[i], out, tag2), 0);
		assert_memory_equal(out, ct, lens[i]);
		assert_memory_equal(tag2, tag, sizeof(tag));
		/* A new IV changes both. */
		iv[11] ^= 0x01;
		assert_int_equal(crypto_gcm_seal(key, iv, aad, sizeof(aad),
		    pt, lens[i], out, tag2), 0);
		assert_false(crypto_equal(tag2, tag, sizeof(tag)));
	}
}

/* ------------------------------------------------------------------ */
/* HKDF-SHA256                                                         */
/* ------------------------------------------------------------------ */

static void
hkdf_check(const char *name, const uint8_t *ikm, size_t ikmlen,
    const uint8_t *salt, size_t saltlen, const uint8_t *info, size_t infolen,
    const char *okmhex)
{
	uint8_t	 want[128], out[128];
	size_t	 len;

	print_message("%s\n", name);
	len = unhex(okmhex, want, sizeof(want));
	memset(out, FILL, sizeof(out));
	assert_int_equal(crypto_hkdf_sha256(ikm, ikmlen, salt, saltlen, info,
	    infolen, out, len), 0);
	assert_memory_equal(out, want, len);
	assert_true(all_bytes(out + len, sizeof(out) - len, FILL));
	/* HKDF-Expand output is a prefix of any longer output. */
	memset(out, FILL, sizeof(out));
	assert_int_equal(crypto_hkdf_sha256(ikm, ikmlen, salt, saltlen, info,
	    infolen, out, 1), 0);
	assert_int_equal(out[0], want[0]);
	assert_int_equal(out[1], FILL);
	assert_int_equal(crypto_hkdf_sha256(ikm, ikmlen, salt, saltlen, info,
	    infolen, out, 32), 0);
	assert_memory_equal(out, want, 32);
}

/* RFC 5869, appendix A.1: test case 1, basic test case with SHA-256. */
static void
test_hkdf_rfc5869_case1(void **state)
{
	uint8_t	 ikm[22], salt[13], info[10];

	(void)state;
	assert_int_equal(unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
	    ikm, sizeof(ikm)), 22);
	assert_int_equal(unhex("000102030405060708090a0b0c", salt,
	    sizeof(salt)), 13);
	assert_int_equal(unhex("f0f1f2f3f4f5f6f7f8f9", info, sizeof(info)),
	    10);
	hkdf_check("RFC 5869 A.1", ikm, sizeof(ikm), salt, sizeof(salt),
	    info, sizeof(info),
	    "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
	    "34007208d5b887185865");
}

/* RFC 5869, appendix A.2: test case 2, longer inputs and outputs. */
static void
test_hkdf_rfc5869_case2(void **state)
{
	uint8_t	 ikm[80], salt[80], info[80];

	(void)state;
	assert_int_equal(unhex(
	    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	    "404142434445464748494a4b4c4d4e4f", ikm, sizeof(ikm)), 80);
	assert_int_equal(unhex(
	    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
	    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
	    "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf", salt, sizeof(salt)), 80);
	assert_int_equal(unhex(
	    "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
	    "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"
	    "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", info, sizeof(info)), 80);
	hkdf_check("RFC 5869 A.2", ikm, sizeof(ikm), salt, sizeof(salt),
	    info, sizeof(info),
	    "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
	    "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
	    "cc30c58179ec3e87c14c01d5c1f3434f1d87");
}

/* RFC 5869, appendix A.3: test case 3, zero-length salt and info. */
static void
test_hkdf_rfc5869_case3(void **state)
{
	static const char okm[] =
	    "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
	    "9d201395faa4b61a96c8";
	static const uint8_t empty[1] = { 0 };
	uint8_t	 ikm[22], zeros[CRYPTO_SHA256_LEN];

	(void)state;
	assert_int_equal(unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
	    ikm, sizeof(ikm)), 22);
	/* Salt and info given as empty buffers ... */
	hkdf_check("RFC 5869 A.3, empty buffers", ikm, sizeof(ikm), empty, 0,
	    empty, 0, okm);
	/* ... and as NULL. */
	hkdf_check("RFC 5869 A.3, NULL", ikm, sizeof(ikm), NULL, 0, NULL, 0,
	    okm);
	/* RFC 5869 section 2.2: no salt means HashLen zeros. */
	memset(zeros, 0, sizeof(zeros));
	hkdf_check("RFC 5869 A.3, salt of 32 zeros", ikm, sizeof(ikm), zeros,
	    sizeof(zeros), NULL, 0, okm);
}

/* RFC 5869 section 2.3: L <= 255 * HashLen = 8160. */
static void
test_hkdf_lengths(void **state)
{
	static uint8_t big[8161 + 16];
	static uint8_t small[64];
	const uint8_t ikm[4] = { 1, 2, 3, 4 };

	(void)state;
	assert_int_equal(crypto_hkdf_sha256(ikm, sizeof(ikm), NULL, 0, NULL, 0,
	    big, 8160), 0);
	/* The longest output agrees with a short one on its prefix. */
	assert_int_equal(crypto_hkdf_sha256(ikm, sizeof(ikm), NULL, 0, NULL, 0,
	    small, sizeof(small)), 0);
	assert_memory_equal(big, small, sizeof(small));
	memset(big, FILL, sizeof(big));
	assert_int_equal(crypto_hkdf_sha256(ikm, sizeof(ikm), NULL, 0, NULL, 0,
	    big, 8161), -1);
	assert_int_equal(crypto_hkdf_sha256(ikm, sizeof(ikm), NULL, 0, NULL, 0,
	    big, 0), -1);
	assert_int_equal(crypto_hkdf_sha256(ikm, sizeof(ikm), NULL, 0, NULL, 0,
	    big, SIZE_MAX), -1);
}

/* ------------------------------------------------------------------ */
/* HMAC-SHA256 and SHA-256                                             */
/* ------------------------------------------------------------------ */

static void
hmac_check(const char *name, const uint8_t *key, size_t keylen,
    const void *msg, size_t msglen, const char *machex)
{
	uint8_t	 want[CRYPTO_SHA256_LEN], out[CRYPTO_SHA256_LEN];
	size_t	 len;

	print_message("%s\n", name);
	len = unhex(machex, want, sizeof(want));
	memset(out, FILL, sizeof(out));
	assert_int_equal(crypto_hmac_sha256(key, keylen, msg, msglen, out), 0);
	assert_memory_equal(out, want, len);
}

/* RFC 4231 section 4, HMAC-SHA-256 values. */
static void
test_hmac_rfc4231(void **state)
{
	static const char case7[] =
	    "This is a test using a larger than block-size key and a larger "
	    "than block-size data. The key needs to be hashed before being "
	    "used by the HMAC algorithm.";
	uint8_t	 key[131], data[50];

	(void)state;
	/* 4.2. Test Case 1 */
	memset(key, 0x0b, 20);
	hmac_check("RFC 4231 test case 1", key, 20, "Hi There", 8,
	    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

	/* 4.3. Test Case 2: a key shorter than the output. */
	hmac_check("RFC 4231 test case 2", (const uint8_t *)"Jefe", 4,
	    "what do ya want for nothing?", 28,
	    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

	/* 4.4. Test Case 3 */
	memset(key, 0xaa, 20);
	memset(data, 0xdd, 50);
	hmac_check("RFC 4231 test case 3", key, 20, data, 50,
	    "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");

	/* 4.5. Test Case 4 */
	assert_int_equal(unhex("0102030405060708090a0b0c0d0e0f10111213141516"
	    "171819", key, sizeof(key)), 25);
	memset(data, 0xcd, 50);
	hmac_check("RFC 4231 test case 4", key, 25, data, 50,
	    "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");

	/* 4.6. Test Case 5: the RFC gives only the first 128 bits. */
	memset(key, 0x0c, 20);
	hmac_check("RFC 4231 test case 5 (first 16 bytes)", key, 20,
	    "Test With Truncation", 20, "a3b6167473100ee06e0c796c2955552b");

	/* 4.7. Test Case 6: a 131-byte key, hashed first. */
	memset(key, 0xaa, 131);
	hmac_check("RFC 4231 test case 6", key, 131,
	    "Test Using Larger Than Block-Size Key - Hash Key First", 54,
	    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");

	/* 4.8. Test Case 7: a 131-byte key and 152 bytes of data. */
	assert_int_equal(strlen(case7), 152);
	hmac_check("RFC 4231 test case 7", key, 131, case7, 152,
	    "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

/* FIPS 180-2, appendix B.1 ("abc"), and the digest of the empty string. */
static void
test_sha256(void **state)
{
	uint8_t	 want[CRYPTO_SHA256_LEN], out[CRYPTO_SHA256_LEN];

	(void)state;
	assert_int_equal(unhex(
	    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
	    want, sizeof(want)), CRYPTO_SHA256_LEN);
	crypto_sha256("abc", 3, out);
	assert_memory_equal(out, want, sizeof(want));
	assert_int_equal(unhex(
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	    want, sizeof(want)), CRYPTO_SHA256_LEN);
	crypto_sha256("", 0, out);
	assert_memory_equal(out, want, sizeof(want));
}

/* ------------------------------------------------------------------ */
/* crypto_equal, crypto_random                                         */
/* ------------------------------------------------------------------ */

static void
test_equal(void **state)
{
	uint8_t	 a[33], b[33];
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(a); i++)
		a[i] = b[i] = (uint8_t)(i * 7 + 1);
	assert_true(crypto_equal(a, b, sizeof(a)));
	assert_true(crypto_equal(a, a, sizeof(a)));
	assert_true(crypto_equal(a, b, 0));
	for (i = 0; i < sizeof(a); i++) {
		b[i] ^= 0x80;
		assert_false(crypto_equal(a, b, sizeof(a)));
		/* Only the first n bytes count. */
		assert_true(crypto_equal(a, b, i));
		b[i] ^= 0x80;
	}
	b[32] ^= 0x01;
	assert_false(crypto_equal(a, b, sizeof(a)));
	assert_true(crypto_equal(a, b, 32));
}

static void
test_random(void **state)
{
	uint8_t	 a[32], b[32], zero[32];

	(void)state;
	memset(zero, 0, sizeof(zero));
	crypto_random(a, sizeof(a));
	crypto_random(b, sizeof(b));
	assert_memory_not_equal(a, b, sizeof(a));
	assert_memory_not_equal(a, zero, sizeof(a));
	assert_memory_not_equal(b, zero, sizeof(b));
	/* A zero-length draw is harmless. */
	crypto_random(a, 0);
}

/*
 * The kernel's generator: libgcrypt's own would stir its pool at every
 * hash and cipher opened, with getrusage(), a walk over every thread.
 */
static void
test_the_generator_is_the_kernels(void **state)
{
	(void)state;
	assert_string_equal(crypto_generator(), "system");
}

/* ------------------------------------------------------------------ */
/* The generator after fork()                                          */
/* ------------------------------------------------------------------ */

#define FORK_KIDS	4
#define FORK_DRAWS	200000	/* 5 processes: a million IVs in all */
#define FORK_BATCH	1000

static uint8_t forked_ivs[(FORK_KIDS + 1) * FORK_DRAWS][CRYPTO_GCM_IV_LEN];

static int
cmp_iv(const void *a, const void *b)
{
	return memcmp(a, b, CRYPTO_GCM_IV_LEN);
}

/* Moves all n bytes between p and fd: writes them out, or reads them in. */
static int
move_all(int fd, uint8_t *p, size_t n, bool out)
{
	ssize_t	 k;

	while (n > 0) {
		k = out ? write(fd, p, n) : read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* In the child: FORK_DRAWS 12-byte IVs, one draw() call each. */
static void __attribute__((noreturn))
child_draws(int fd, void (*draw)(void *, size_t))
{
	static uint8_t batch[FORK_BATCH][CRYPTO_GCM_IV_LEN];
	size_t	 i, j;

	for (i = 0; i < FORK_DRAWS / FORK_BATCH; i++) {
		for (j = 0; j < FORK_BATCH; j++)
			draw(batch[j], CRYPTO_GCM_IV_LEN);
		if (move_all(fd, &batch[0][0], sizeof(batch), true) != 0)
			_exit(2);
	}
	_exit(close(fd) == 0 ? 0 : 3);
}

/*
 * Five processes draw from one generator seeded before they forked: no
 * draw repeats among them.
 */
static void
draws_after_fork(void (*draw)(void *, size_t))
{
	int	 fds[FORK_KIDS][2], status, k;
	pid_t	 pids[FORK_KIDS];
	uint8_t	 warm[CRYPTO_GCM_IV_LEN];
	size_t	 i, total = (FORK_KIDS + 1) * FORK_DRAWS;

	/* The parent's generator is seeded and in use before the fork. */
	draw(warm, sizeof(warm));
	fflush(NULL);
	for (k = 0; k < FORK_KIDS; k++) {
		assert_int_equal(pipe(fds[k]), 0);
		pids[k] = fork();
		assert_true(pids[k] >= 0);
		if (pids[k] == 0) {
			close(fds[k][0]);
			child_draws(fds[k][1], draw);
		}
		close(fds[k][1]);
	}
	for (i = 0; i < FORK_DRAWS; i++)
		draw(forked_ivs[FORK_KIDS * FORK_DRAWS + i],
		    CRYPTO_GCM_IV_LEN);
	for (k = 0; k < FORK_KIDS; k++) {
		if (move_all(fds[k][0], forked_ivs[(size_t)k * FORK_DRAWS],
		    (size_t)FORK_DRAWS * CRYPTO_GCM_IV_LEN, false) != 0)
			fail_msg("short read from child %d", k);
		close(fds[k][0]);
		assert_int_equal(waitpid(pids[k], &status, 0), pids[k]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}

	qsort(forked_ivs, total, CRYPTO_GCM_IV_LEN, cmp_iv);
	for (i = 1; i < total; i++)
		if (memcmp(forked_ivs[i - 1], forked_ivs[i],
		    CRYPTO_GCM_IV_LEN) == 0)
			fail_msg("IV repeated among %zu draws in %d processes",
			    total, FORK_KIDS + 1);
}

static void
test_random_after_fork(void **state)
{
	(void)state;
	draws_after_fork(crypto_random);
}

/* Nonces name calls (a leased call's id): no two workers share one. */
/* The Unix time in ms that an id made by crypto_time_id() begins with. */
static uint64_t
id_ms(const uint8_t *p)
{
	uint64_t ms = 0;
	int	 i;

	for (i = 0; i < 6; i++)
		ms = ms << 8 | p[i];
	return ms;
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Time-ordered ids: they begin with the time they were made, so that ids
 * made later sort after (as text and as PostgreSQL compares uuids: byte
 * by byte), and what follows is not the same twice.
 */
static void
test_time_ids(void **state)
{
	uint8_t	 a[12], b[12];
	uint64_t before, after;
	const struct timespec pause = { 0, 3 * 1000 * 1000 };

	(void)state;
	before = now_ms();
	crypto_time_id(a, sizeof(a));
	crypto_time_id(b, sizeof(b));
	after = now_ms();
	assert_true(id_ms(a) >= before && id_ms(a) <= after);
	assert_true(id_ms(b) >= id_ms(a) && id_ms(b) <= after);
	assert_memory_not_equal(a + 6, b + 6, 6);
	nanosleep(&pause, NULL);
	crypto_time_id(b, sizeof(b));
	assert_true(id_ms(b) > id_ms(a));
	assert_true(memcmp(b, a, sizeof(a)) > 0);
}

static void
test_uuid7(void **state)
{
	char	 u[CRYPTO_UUID_LEN + 1], v[CRYPTO_UUID_LEN + 1];
	uint8_t	 b[16];
	uint64_t before, after;
	const struct timespec pause = { 0, 3 * 1000 * 1000 };
	size_t	 i;
	char	 hex[33];

	(void)state;
	before = now_ms();
	crypto_uuid7(u);
	after = now_ms();
	assert_int_equal(strlen(u), 36);
	for (i = 0; i < 36; i++)
		if (i == 8 || i == 13 || i == 18 || i == 23)
			assert_int_equal(u[i], '-');
		else
			assert_non_null(strchr("0123456789abcdef", u[i]));
	/* Version 7, variant 10 (RFC 9562). */
	assert_int_equal(u[14], '7');
	assert_non_null(strchr("89ab", u[19]));
	memset(hex, 0, sizeof(hex));
	for (i = 0; i < 36; i++)
		if (u[i] != '-')
			hex[strlen(hex)] = u[i];
	assert_int_equal(unhex(hex, b, sizeof(b)), 16);
	assert_true(id_ms(b) >= before && id_ms(b) <= after);
	nanosleep(&pause, NULL);
	crypto_uuid7(v);
	assert_true(strcmp(v, u) > 0);
	crypto_uuid7(u);
	assert_string_not_equal(u, v);
}

static void
test_nonces_after_fork(void **state)
{
	(void)state;
	draws_after_fork(crypto_nonce);
}

UNIT_MAIN(unit_crypto_setup,
    cmocka_unit_test(test_the_generator_is_the_kernels),
    cmocka_unit_test(test_gcm_spec_vectors),
    cmocka_unit_test(test_gcm_wycheproof_valid),
    cmocka_unit_test(test_gcm_wycheproof_modified_tag),
    cmocka_unit_test(test_gcm_other_iv_lengths_refused),
    cmocka_unit_test(test_gcm_round_trip),
    cmocka_unit_test(test_hkdf_rfc5869_case1),
    cmocka_unit_test(test_hkdf_rfc5869_case2),
    cmocka_unit_test(test_hkdf_rfc5869_case3),
    cmocka_unit_test(test_hkdf_lengths),
    cmocka_unit_test(test_hmac_rfc4231),
    cmocka_unit_test(test_sha256),
    cmocka_unit_test(test_equal),
    cmocka_unit_test(test_random),
    cmocka_unit_test(test_time_ids),
    cmocka_unit_test(test_uuid7),
    cmocka_unit_test(test_random_after_fork),
    cmocka_unit_test(test_nonces_after_fork))
