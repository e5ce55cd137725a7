/*
 * isa-ota-sign — the vendor's side of OTA releases (docs/services/ota.md,
 * "Signing a release"): Ed25519 keys, the manifest of a firmware image, and
 * its detached signature, with libsodium and the parser isa.so runs
 * (ota/manifest.c, ota/semver.c).
 *
 *   isa-ota-sign keygen SEEDFILE          new key: the seed (hex) into SEEDFILE (0600), the public key (hex) on stdout
 *   isa-ota-sign pubkey SEEDFILE          the public key (hex) of a seed
 *   isa-ota-sign manifest MODEL VERSION FIRMWARE FILE_ID [NOTES]
 *                                         the manifest of FIRMWARE (size and SHA-256 computed) on stdout, no newline
 *   isa-ota-sign sign SEEDFILE MANIFEST   the signature (hex) of MANIFEST's exact bytes; refuses an invalid manifest
 *   isa-ota-sign verify PUBKEY_HEX MANIFEST SIGNATURE_HEX   exit 0 when valid
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "ota.h"

static int
die(const char *msg)
{
	fprintf(stderr, "isa-ota-sign: %s\n", msg);
	return 2;
}

/* The whole of a file into a malloc'd buffer; NULL on error. */
static unsigned char *
slurp(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	size_t		cap = 0,
				n = 0;

	if (f == NULL)
		return NULL;
	for (;;)
	{
		size_t		r;

		if (n == cap)
		{
			unsigned char *nb = realloc(buf, cap ? cap * 2 : 65536);

			if (nb == NULL)
			{
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
			cap = cap ? cap * 2 : 65536;
		}
		r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
	}
	fclose(f);
	*len = n;
	return buf;
}

static int
hex_in(const char *hex, unsigned char *out, size_t outlen)
{
	size_t		bin_len;

	if (sodium_hex2bin(out, outlen, hex, strlen(hex), " \n", &bin_len, NULL) != 0 || bin_len != outlen)
		return -1;
	return 0;
}

static int
read_key(const char *path, unsigned char pk[crypto_sign_PUBLICKEYBYTES], unsigned char sk[crypto_sign_SECRETKEYBYTES])
{
	size_t		len;
	unsigned char *text = slurp(path, &len);
	char		hex[2 * crypto_sign_SEEDBYTES + 1];
	unsigned char seed[crypto_sign_SEEDBYTES];
	int			rc;

	if (text == NULL || len < 2 * crypto_sign_SEEDBYTES)
	{
		free(text);
		return -1;
	}
	memcpy(hex, text, 2 * crypto_sign_SEEDBYTES);
	hex[2 * crypto_sign_SEEDBYTES] = '\0';
	sodium_memzero(text, len);
	free(text);
	rc = hex_in(hex, seed, sizeof seed);
	sodium_memzero(hex, sizeof hex);
	if (rc == 0)
		crypto_sign_seed_keypair(pk, sk, seed);
	sodium_memzero(seed, sizeof seed);
	return rc;
}

static void
print_hex(const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
	printf("\n");
}

/* A JSON string's body: only the escapes the manifest's parser takes. */
static int
put_json_string(const char *s)
{
	putchar('"');
	for (; *s; s++)
	{
		if ((unsigned char) *s < 0x20 || *s == 0x7F)
			return -1;
		if (*s == '"' || *s == '\\')
			putchar('\\');
		putchar(*s);
	}
	putchar('"');
	return 0;
}

int
main(int argc, char **argv)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	unsigned char sk[crypto_sign_SECRETKEYBYTES];

	if (sodium_init() < 0)
		return die("libsodium could not be initialised");
	if (argc == 3 && strcmp(argv[1], "keygen") == 0)
	{
		unsigned char seed[crypto_sign_SEEDBYTES];
		char		hex[2 * crypto_sign_SEEDBYTES + 2];
		int			fd = open(argv[2], O_WRONLY | O_CREAT | O_EXCL, 0600);

		if (fd < 0)
			return die(errno == EEXIST ? "the seed file exists already (not overwritten)" : "cannot create the seed file");
		randombytes_buf(seed, sizeof seed);
		sodium_bin2hex(hex, sizeof hex, seed, sizeof seed);
		strcat(hex, "\n");
		if (write(fd, hex, strlen(hex)) != (ssize_t) strlen(hex) || close(fd) != 0)
			return die("cannot write the seed file");
		crypto_sign_seed_keypair(pk, sk, seed);
		sodium_memzero(seed, sizeof seed);
		sodium_memzero(hex, sizeof hex);
		print_hex(pk, sizeof pk);
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "pubkey") == 0)
	{
		if (read_key(argv[2], pk, sk) != 0)
			return die("the seed file must hold 64 hexadecimal digits");
		print_hex(pk, sizeof pk);
		return 0;
	}
	if ((argc == 6 || argc == 7) && strcmp(argv[1], "manifest") == 0)
	{
		size_t		len;
		unsigned char *fw = slurp(argv[4], &len);
		unsigned char digest[crypto_hash_sha256_BYTES];
		char		hex[2 * crypto_hash_sha256_BYTES + 1];

		if (fw == NULL || len == 0)
			return die("cannot read the firmware file (or it is empty)");
		if (!ota_version_valid(argv[3], strlen(argv[3])))
			return die("VERSION is not a semantic version (SemVer 2.0.0)");
		crypto_hash_sha256(digest, fw, len);
		free(fw);
		sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
		printf("{\"format\":\"isa-ota-manifest/1\",\"model\":");
		if (put_json_string(argv[2]) != 0)
			return die("MODEL has a control character");
		printf(",\"version\":\"%s\",\"sha256\":\"%s\",\"size\":%zu,\"file_id\":", argv[3], hex, len);
		if (put_json_string(argv[5]) != 0)
			return die("FILE_ID has a control character");
		if (argc == 7)
		{
			printf(",\"notes\":");
			if (put_json_string(argv[6]) != 0)
				return die("NOTES has a control character");
		}
		printf("}");
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "sign") == 0)
	{
		size_t		len;
		unsigned char *man;
		unsigned char sig[crypto_sign_BYTES];
		OtaManifest m;
		char		err[256];

		if (read_key(argv[2], pk, sk) != 0)
			return die("the seed file must hold 64 hexadecimal digits");
		man = slurp(argv[3], &len);
		if (man == NULL)
			return die("cannot read the manifest");
		if (!ota_manifest_parse((const char *) man, len, &m, err, sizeof err))
		{
			fprintf(stderr, "isa-ota-sign: invalid manifest: %s\n", err);
			return 2;
		}
		ota_manifest_free(&m);
		crypto_sign_detached(sig, NULL, man, len, sk);
		sodium_memzero(sk, sizeof sk);
		free(man);
		print_hex(sig, sizeof sig);
		return 0;
	}
	if (argc == 5 && strcmp(argv[1], "verify") == 0)
	{
		size_t		len;
		unsigned char *man;
		unsigned char sig[crypto_sign_BYTES];
		int			ok;

		if (hex_in(argv[2], pk, sizeof pk) != 0 || hex_in(argv[4], sig, sizeof sig) != 0)
			return die("PUBKEY_HEX is 64 and SIGNATURE_HEX 128 hexadecimal digits");
		man = slurp(argv[3], &len);
		if (man == NULL)
			return die("cannot read the manifest");
		ok = crypto_sign_verify_detached(sig, man, len, pk) == 0;
		free(man);
		puts(ok ? "valid" : "INVALID");
		return ok ? 0 : 1;
	}
	fprintf(stderr,
			"usage: isa-ota-sign keygen SEEDFILE | pubkey SEEDFILE | manifest MODEL VERSION FIRMWARE FILE_ID [NOTES]\n"
			"       | sign SEEDFILE MANIFEST | verify PUBKEY_HEX MANIFEST SIGNATURE_HEX\n");
	return 2;
}
