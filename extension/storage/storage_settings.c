/*
 * storage_settings.c — the storage service's settings: the largest file and
 * the key of signed download URLs (docs/services/storage.md,
 * docs/configuration.md), registered by _PG_init through
 * isa_storage_define_gucs().  The service reads them in SQL
 * (sql/storage/storage.sql, storage._setting), the secret through
 * storage._url_secret_setting() (below); isa-httpd streams the files.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "isa.h"

static int	isa_storage_max_file_bytes = 64 * 1024 * 1024;
static char *isa_storage_url_secret = NULL;

void
isa_storage_define_gucs(void)
{
	DefineCustomIntVariable("isa.storage_max_file_bytes",
							"Largest file the storage service accepts (uploads are refused beyond it).",
							"finish_upload hashes a file in memory: at most 512MB.",
							&isa_storage_max_file_bytes, 64 * 1024 * 1024, 0, 512 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomStringVariable("isa.storage_url_secret",
							   "Key of the signed download URLs (HMAC-SHA256), at least 32 bytes.",
							   "Superuser-only; never shown to other roles nor logged by isa.",
							   &isa_storage_url_secret, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(isa_storage_url_secret_setting);

/*
 * storage._url_secret_setting() RETURNS text: isa.storage_url_secret ('' when
 * unset).  The one reader of the secret besides superusers: EXECUTE on it
 * is its owner's, the storage service's role (isa_svc_storage), which
 * current_setting() would refuse (GUC_SUPERUSER_ONLY) and which should not
 * hold pg_read_all_settings (every secret of every service).
 */
Datum
isa_storage_url_secret_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(isa_storage_url_secret ? isa_storage_url_secret : ""));
}
