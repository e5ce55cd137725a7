# isa — the PGXS build: the extension (isa.so and its SQL scripts) and the HTTP
# front isa-httpd.  This file builds and installs, nothing else; the developer
# commands of the README (make deps, run, test, bench, installcheck, deb …) are
# in tools/dev.mk, included at the end.  docs/architecture.md describes the
# layout and the rule for versions and upgrade scripts.

EXTENSION = isa

# Every version, oldest first.  The last is the one being built (isa.control's
# default_version); the first is the oldest a database can be upgraded from:
# its full install script is kept in sql/released/.  Each later version has an
# upgrade script isa--A--B.sql, made from the fragments sql/*/upgrades/A--B.sql.
ISA_VERSIONS = 0.1.0 0.2.0

# The platform's core (sql/core/), then one folder per service: sql/<service>/
# holds <service>.sql and its upgrade fragments, test/pgtap/<service>/ its tests,
# docs/services/<service>.md its API.  Services load in the order of the calls
# between them; adding a service is its files plus its name here.
ISA_CORE = core crypto nats outbox subscriptions jobs services table_events bridge http trace
ISA_SERVICES ?= account auth product wallet billing payment orders storage organization device ota notification authz session event audit

EXTVERSION = $(lastword $(ISA_VERSIONS))
ifneq ($(EXTVERSION),$(shell sed -n "s/^default_version = '\(.*\)'/\1/p" isa.control))
$(error isa.control's default_version is not $(EXTVERSION), the last of ISA_VERSIONS)
endif

MODULE_big = isa
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard extension/*.c extension/*/*.c bridge/*.c ota/*.c)))

# ---------------------------------------------------------------- SQL scripts
SQL_SOURCES = \
	$(ISA_CORE:%=sql/core/%.sql) \
	$(foreach s,$(ISA_SERVICES),sql/$(s)/$(s).sql) \
	sql/core/grants.sql

# isa--A--B.sql for each pair of consecutive versions
ISA_STEPS = $(join $(addsuffix --,$(wordlist 1,$(words $(ISA_VERSIONS)),x $(ISA_VERSIONS))),$(ISA_VERSIONS))
UPGRADE_SCRIPTS = $(patsubst %,$(EXTENSION)--%.sql,$(filter-out x--%,$(ISA_STEPS)))
UPGRADE_FRAGMENTS = $(wildcard sql/*/upgrades/*.sql)

DATA = $(wildcard sql/released/$(EXTENSION)--*.sql)
DATA_built = $(EXTENSION)--$(EXTVERSION).sql $(UPGRADE_SCRIPTS)
EXTRA_CLEAN = $(DATA_built) $(addsuffix .tmp,$(UPGRADE_SCRIPTS))

PG_CONFIG ?= pg_config
# libcurl: the notification senders' SMTP and HTTP (extension/notification/).
PG_CPPFLAGS = -I$(srcdir)/extension -I$(srcdir)/bridge -I$(srcdir)/ota -DISA_SQL_VERSION='"$(EXTVERSION)"' \
	$(shell pkg-config --cflags libcurl 2>/dev/null)
SHLIB_LINK = -lnats $(shell pkg-config --libs libsodium 2>/dev/null || echo -lsodium) \
	$(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
# -Wextra minus the two warnings PostgreSQL's own headers and fmgr style trigger.
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers

PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else ifeq ($(filter deps deps-% run test bench installcheck deb,$(MAKECMDGOALS)),)
$(error $(PG_CONFIG) not found: install postgresql-server-dev-15 (make deps does))
endif

# PGXS does not track headers: every object depends on isa's own (a struct
# that changes in a header must not keep its old layout in an unchanged .c file).
$(OBJS): $(wildcard extension/*.h extension/*/*.h bridge/*.h ota/*.h)

# The lists of files are prerequisites too: `make ISA_SERVICES=... install`
# must rebuild the scripts when only a list changed.
SQL_LIST_STAMP = .sql-sources
$(shell echo '$(SQL_SOURCES) $(UPGRADE_FRAGMENTS)' | cmp -s - $(SQL_LIST_STAMP) || echo '$(SQL_SOURCES) $(UPGRADE_FRAGMENTS)' > $(SQL_LIST_STAMP))
EXTRA_CLEAN += $(SQL_LIST_STAMP)

# The full script of the version being built: the files, in order.
$(EXTENSION)--$(EXTVERSION).sql: $(SQL_SOURCES) $(SQL_LIST_STAMP) isa.control Makefile
	@{ echo "-- generated from sql/ by make; edit those files"; \
	   printf '%s\n' '\echo Use "CREATE EXTENSION isa" to load this file. \quit'; \
	   for f in $(SQL_SOURCES); do echo; echo "-- ==== $$f"; cat $$f; done; } > $@

# An upgrade script, area by area in the order of a fresh install (the core,
# then each service in the order of ISA_SERVICES): the area's hand-written
# fragment of the step, then what every upgrade runs again from the area's
# newest sources (functions as CREATE OR REPLACE, comments, grants:
# tools/sql-replay.py), so that a later area's fragment (a new service's whole
# file) runs against the newest core and services it calls.  Then
# sql/core/grants.sql (idempotent: a new object gets a fresh install's grants).
$(UPGRADE_SCRIPTS): $(EXTENSION)--%.sql: $(UPGRADE_FRAGMENTS) $(SQL_SOURCES) tools/sql-replay.py $(SQL_LIST_STAMP) Makefile
	@{ echo "-- generated from sql/ by make; edit those files"; \
	   printf '%s\n' '\echo Use "ALTER EXTENSION isa UPDATE" to load this file. \quit'; \
	   for a in core $(ISA_SERVICES); do \
	     f=sql/$$a/upgrades/$*.sql; if [ -f $$f ]; then echo; echo "-- ==== $$f"; cat $$f; fi; \
	     if [ $$a = core ]; then src="$(ISA_CORE:%=sql/core/%.sql)"; else src=sql/$$a/$$a.sql; fi; \
	     python3 tools/sql-replay.py $$src || exit 1; \
	   done; \
	   echo; echo "-- ==== sql/core/grants.sql"; cat sql/core/grants.sql; } > $@.tmp && mv $@.tmp $@

# ---------------------------------------------------------------- isa-httpd
# The HTTP front (httpd/): a program of its own, built with the extension.
# It also compiles auth's token verification (extension/auth/jwt_verify.c,
# plain C over libsodium), so that both programs run the same rules.
HTTPD_OBJS = $(patsubst %.c,%.o,$(wildcard httpd/*.c)) httpd/jwt_verify.o
HTTPD_PKGS = libmicrohttpd jansson libsodium
HTTPD_CFLAGS = -O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -pthread -Iextension/auth \
	$(shell pkg-config --cflags $(HTTPD_PKGS) 2>/dev/null) -I$(shell $(PG_CONFIG) --includedir 2>/dev/null)
HTTPD_LIBS = $(shell pkg-config --libs $(HTTPD_PKGS) 2>/dev/null) \
	-L$(shell $(PG_CONFIG) --libdir 2>/dev/null) -lpq -pthread -lm

all: httpd/isa-httpd

httpd/isa-httpd: $(HTTPD_OBJS)
	$(CC) -o $@ $(HTTPD_OBJS) $(HTTPD_LIBS)

httpd/%.o: httpd/%.c httpd/httpd.h extension/auth/jwt_verify.h
	$(CC) $(HTTPD_CFLAGS) -c -o $@ $<

httpd/jwt_verify.o: extension/auth/jwt_verify.c extension/auth/jwt_verify.h
	$(CC) $(HTTPD_CFLAGS) -c -o $@ $<

EXTRA_CLEAN += httpd/*.o httpd/isa-httpd

# ---------------------------------------------------------------- isa-nats-keys
# Mints the nkeys and JWTs of NATS's operator/JWT mode for tools/stack.sh and
# tools/nats-config.sh, with the code of isa.so's isa.nats_* functions
# (extension/nats_jwt.c, plain C over libsodium).
NATS_KEYS_CFLAGS = -O2 -g -std=gnu11 -Wall -Wextra -Werror -Wshadow -Iextension \
	$(shell pkg-config --cflags libsodium 2>/dev/null)

all: tools/isa-nats-keys

tools/isa-nats-keys: tools/isa-nats-keys.c extension/nats_jwt.c extension/nats_jwt.h
	$(CC) $(NATS_KEYS_CFLAGS) -o $@ tools/isa-nats-keys.c extension/nats_jwt.c \
		$(shell pkg-config --libs libsodium 2>/dev/null)

EXTRA_CLEAN += tools/isa-nats-keys

# ---------------------------------------------------------------- isa-nats-revoker
# Pushes the device service's revocations into the account JWT (the NATS
# operator's side: it holds the operator's signing key, the database does
# not; docs/services/device.md, "Revocation").  libpq, nats.c, nats_jwt.c.
NATS_REVOKER_CFLAGS = $(NATS_KEYS_CFLAGS) -pthread -I$(shell $(PG_CONFIG) --includedir 2>/dev/null)
NATS_REVOKER_LIBS = -L$(shell $(PG_CONFIG) --libdir 2>/dev/null) -lpq -lnats \
	$(shell pkg-config --libs libsodium 2>/dev/null) -pthread

all: tools/isa-nats-revoker

tools/isa-nats-revoker: tools/isa-nats-revoker.c extension/nats_jwt.c extension/nats_jwt.h
	$(CC) $(NATS_REVOKER_CFLAGS) -o $@ tools/isa-nats-revoker.c extension/nats_jwt.c $(NATS_REVOKER_LIBS)

EXTRA_CLEAN += tools/isa-nats-revoker

# ---------------------------------------------------------------- isa-ota-sign
# The vendor's tool that signs OTA release manifests (docs/services/ota.md),
# with the manifest parser isa.so runs (ota/manifest.c, ota/semver.c).
OTA_SIGN_SRCS = tools/isa-ota-sign.c ota/manifest.c ota/semver.c

all: tools/isa-ota-sign

tools/isa-ota-sign: $(OTA_SIGN_SRCS) ota/ota.h
	$(CC) $(NATS_KEYS_CFLAGS) -Iota -o $@ $(OTA_SIGN_SRCS) $(shell pkg-config --libs libsodium 2>/dev/null)

EXTRA_CLEAN += tools/isa-ota-sign

# For operators: the binary and the systemd unit (httpd/isa-httpd.service).
PREFIX ?= /usr/local
.PHONY: install-httpd
install-httpd: httpd/isa-httpd
	install -D -m 755 httpd/isa-httpd $(DESTDIR)$(PREFIX)/bin/isa-httpd

include tools/dev.mk
