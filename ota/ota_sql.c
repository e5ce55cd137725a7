/*
 * ota_sql.c — the OTA service's C functions in SQL (sql/ota/ota.sql):
 * versions (semver.c), the manifest (manifest.c) and Ed25519 signature
 * verification with libsodium.  Which keys are trusted is SQL's business
 * (ota.signing_keys); this file only checks one signature with one key.
 */
#include "postgres.h"

#include <sodium.h>

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "ota.h"

static void
check_version(text *t, const char *what)
{
	if (!ota_version_valid(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is not a semantic version", what, text_to_cstring(t)),
				 errhint("SemVer 2.0.0: MAJOR.MINOR.PATCH, optionally -pre.release and +build, e.g. 1.2.0 or 1.3.0-rc.1; at most %d characters.",
						 OTA_VERSION_MAX)));
}

PG_FUNCTION_INFO_V1(isa_ota_version_valid);

/* ota.version_valid(text) RETURNS boolean, STRICT */
Datum
isa_ota_version_valid(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(ota_version_valid(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
}

PG_FUNCTION_INFO_V1(isa_ota_version_cmp);

/* ota.version_cmp(a text, b text) RETURNS integer (-1, 0, 1), STRICT; 22023 on an invalid version */
Datum
isa_ota_version_cmp(PG_FUNCTION_ARGS)
{
	text	   *a = PG_GETARG_TEXT_PP(0);
	text	   *b = PG_GETARG_TEXT_PP(1);

	check_version(a, "version");
	check_version(b, "version");
	PG_RETURN_INT32(ota_version_cmp(VARDATA_ANY(a), VARSIZE_ANY_EXHDR(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b)));
}

PG_FUNCTION_INFO_V1(isa_ota_parse_manifest);

/*
 * ota._parse_manifest(manifest text, OUT model text, OUT version text, OUT
 * sha256 bytea, OUT size bigint, OUT file_id uuid, OUT notes text), STRICT:
 * the manifest's members, or 22023 saying what is wrong.
 */
Datum
isa_ota_parse_manifest(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	OtaManifest m;
	char		err[256];
	TupleDesc	desc;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	bytea	   *sha;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ota._parse_manifest must return a record");
	if (!ota_manifest_parse(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &m, err, sizeof err))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid release manifest: %s", err),
				 errhint("docs/services/ota.md, \"The manifest\", describes its format.")));
	/* copies into palloc'd memory, then the parser's buffer goes, before any error */
	values[0] = CStringGetTextDatum(m.model);
	values[1] = CStringGetTextDatum(m.version);
	sha = palloc(VARHDRSZ + 32);
	SET_VARSIZE(sha, VARHDRSZ + 32);
	memcpy(VARDATA(sha), m.sha256, 32);
	values[2] = PointerGetDatum(sha);
	values[3] = Int64GetDatum((int64) m.size);
	values[4] = CStringGetTextDatum(m.file_id);
	if (m.notes)
		values[5] = CStringGetTextDatum(m.notes);
	else
		nulls[5] = true;
	ota_manifest_free(&m);
	/* file_id as text: the SQL wrapper casts it to uuid */
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

PG_FUNCTION_INFO_V1(isa_ota_ed25519_verify);

/*
 * ota._ed25519_verify(message bytea, signature bytea, public_key bytea)
 * RETURNS boolean, STRICT: whether signature (64 bytes) is public_key's (32
 * bytes) Ed25519 signature of message's exact bytes; false for a signature
 * or key of another length.
 */
Datum
isa_ota_ed25519_verify(PG_FUNCTION_ARGS)
{
	bytea	   *msg = PG_GETARG_BYTEA_PP(0);
	bytea	   *sig = PG_GETARG_BYTEA_PP(1);
	bytea	   *key = PG_GETARG_BYTEA_PP(2);

	if (VARSIZE_ANY_EXHDR(sig) != crypto_sign_BYTES || VARSIZE_ANY_EXHDR(key) != crypto_sign_PUBLICKEYBYTES)
		PG_RETURN_BOOL(false);
	if (sodium_init() < 0)
		elog(ERROR, "libsodium could not be initialised");
	PG_RETURN_BOOL(crypto_sign_verify_detached((const unsigned char *) VARDATA_ANY(sig),
											   (const unsigned char *) VARDATA_ANY(msg), VARSIZE_ANY_EXHDR(msg),
											   (const unsigned char *) VARDATA_ANY(key)) == 0);
}
