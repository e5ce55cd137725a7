/*
 * ota.h — the C that makes firmware updates safe (docs/services/ota.md):
 * SemVer 2.0.0 parsing and ordering (semver.c) and the release manifest's
 * parser (manifest.c).  Plain C without PostgreSQL, so that the libFuzzer
 * target (test/fuzz/fuzz_ota.c) and the vendor's signing tool
 * (tools/isa-ota-sign.c) compile the very code isa.so runs; ota_sql.c makes
 * it SQL-callable and verifies Ed25519 signatures with libsodium.
 */
#ifndef ISA_OTA_H
#define ISA_OTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest version accepted (device.devices.firmware_version's limit). */
#define OTA_VERSION_MAX 64

/*
 * Whether s[0..len) is a SemVer 2.0.0 version: MAJOR.MINOR.PATCH, numbers
 * without leading zeros, an optional -pre.release of non-empty identifiers
 * [0-9A-Za-z-] (numeric ones without leading zeros) and an optional +build
 * of non-empty identifiers; at most OTA_VERSION_MAX bytes.
 */
extern bool ota_version_valid(const char *s, size_t len);

/*
 * SemVer 2.0.0 precedence of two valid versions: <0, 0, >0.  Numbers of any
 * length compare numerically, a pre-release is lower than its release,
 * identifiers compare numeric < alphanumeric, a longer list of equal
 * identifiers is higher, build metadata is ignored.
 */
extern int	ota_version_cmp(const char *a, size_t alen, const char *b, size_t blen);

/* A parsed manifest: pointers into a buffer the parser owns (ota_manifest_free). */
typedef struct OtaManifest
{
	char	   *format;			/* "isa-ota-manifest/1" */
	char	   *model;
	char	   *version;		/* valid SemVer */
	uint8_t		sha256[32];
	uint64_t	size;			/* bytes, >= 1 */
	char	   *file_id;		/* a UUID in canonical lower-case text */
	char	   *notes;			/* optional; NULL when absent */
	char	   *buf;			/* owns the strings */
} OtaManifest;

#define OTA_MANIFEST_MAX 8192	/* bytes */

/*
 * Parses a manifest (docs/services/ota.md, "The manifest"): one JSON object,
 * UTF-8, of the members format, model, version, sha256, size, file_id and
 * optionally notes, no other and none twice.  Returns true and fills *m, or
 * false with a message in err (errlen bytes).  Strings must be valid UTF-8
 * and carry no control character; \u escapes are refused (a manifest is
 * written by a tool, and one spelling per manifest keeps its bytes canonical
 * enough to review).
 */
extern bool ota_manifest_parse(const char *s, size_t len, OtaManifest *m, char *err, size_t errlen);
extern void ota_manifest_free(OtaManifest *m);

#endif
