# isa — PGXS build of the extension plus the developer commands of the README.
#
#   make run     install what is missing, build, start PostgreSQL + NATS under ./.isa/run
#   make test    the same on private ports under ./.isa/test, then every test
#   make bench   benchmarks, each printing one comparable line
#   make stop    stop the `make run` stack;  make psql  open a shell on it
#   make deps    apt-get the Debian packages isa builds and runs with

EXTENSION  = isa
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" isa.control)

MODULE_big = isa
OBJS = \
	extension/isa.o \
	extension/uuid_v7.o \
	extension/wakeup.o \
	extension/publish.o \
	extension/envelope.o \
	extension/crypto.o \
	extension/auth.o \
	extension/auth_shmem.o \
	extension/jwt.o \
	extension/http.o \
	bridge/worker.o \
	bridge/nats_link.o \
	bridge/publisher.o \
	bridge/consumer.o \
	bridge/metrics.o

# The install script is the SQL files in dependency order: core first, the
# service registry before anything that names a service, then one file per
# service (ISA_SERVICES, in the order of the calls between them), grants last.
ISA_SERVICES ?= account authz auth product billing wallet payment orders storage
SQL_SOURCES = \
	sql/core.sql \
	sql/crypto.sql \
	sql/outbox.sql \
	sql/subscriptions.sql \
	sql/jobs.sql \
	sql/services.sql \
	sql/bridge.sql \
	sql/http.sql \
	$(foreach s,$(ISA_SERVICES),sql/$(s).sql) \
	sql/grants.sql

DATA_built = $(EXTENSION)--$(EXTVERSION).sql
EXTRA_CLEAN = $(EXTENSION)--$(EXTVERSION).sql

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/extension -I$(srcdir)/bridge
SHLIB_LINK = -lnats -lsodium
# -Wextra minus the two warnings PostgreSQL's own headers and fmgr style trigger.
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers

PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else
# On a fresh machine pg_config (postgresql-server-dev-15) is not there yet:
# install the packages, then make the same goal again, now with PGXS.
.DEFAULT_GOAL := all
all install run test bench:
	@$(MAKE) --no-print-directory deps
	@command -v $(PG_CONFIG) >/dev/null || { echo "$(PG_CONFIG) not found after make deps" >&2; exit 1; }
	@$(MAKE) --no-print-directory $@
endif

# PGXS does not track headers: every object depends on isa's own (a struct
# that changes in isa.h must not keep its old layout in an unchanged .c file).
$(OBJS): extension/isa.h extension/auth.h bridge/bridge.h

# The list of files is a prerequisite too: `make ISA_SERVICES=... install`
# must rebuild the script when only the list changed.
SQL_LIST_STAMP = .sql-sources
$(shell echo '$(SQL_SOURCES)' | cmp -s - $(SQL_LIST_STAMP) || echo '$(SQL_SOURCES)' > $(SQL_LIST_STAMP))
EXTRA_CLEAN += $(SQL_LIST_STAMP)

$(EXTENSION)--$(EXTVERSION).sql: $(SQL_SOURCES) $(SQL_LIST_STAMP) isa.control Makefile
	@{ echo "-- generated from sql/*.sql by make; edit those files"; \
	   printf '%s\n' '\echo Use "CREATE EXTENSION isa" to load this file. \quit'; \
	   for f in $(SQL_SOURCES); do echo; echo "-- ==== $$f"; cat $$f; done; } > $@

# ---------------------------------------------------------------- isa-httpd
# The HTTP front (httpd/): a program of its own, built with the extension.
HTTPD_OBJS = $(patsubst %.c,%.o,$(wildcard httpd/*.c))
HTTPD_PKGS = libmicrohttpd jansson libsodium
HTTPD_CFLAGS = -O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -pthread \
	$(shell pkg-config --cflags $(HTTPD_PKGS) 2>/dev/null) -I$(shell $(PG_CONFIG) --includedir 2>/dev/null)
HTTPD_LIBS = $(shell pkg-config --libs $(HTTPD_PKGS) 2>/dev/null) \
	-L$(shell $(PG_CONFIG) --libdir 2>/dev/null) -lpq -pthread -lm

all: httpd/isa-httpd

httpd/isa-httpd: $(HTTPD_OBJS)
	$(CC) -o $@ $(HTTPD_OBJS) $(HTTPD_LIBS)

httpd/%.o: httpd/%.c httpd/httpd.h
	$(CC) $(HTTPD_CFLAGS) -c -o $@ $<

EXTRA_CLEAN += httpd/*.o httpd/isa-httpd

# For operators: the binary and the systemd unit (httpd/isa-httpd.service).
PREFIX ?= /usr/local
.PHONY: install-httpd
install-httpd: httpd/isa-httpd
	install -D -m 755 httpd/isa-httpd $(DESTDIR)$(PREFIX)/bin/isa-httpd

# ---------------------------------------------------------------- developer commands
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

DEBIAN_PACKAGES = \
	postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-pgtap \
	libtap-parser-sourcehandler-pgtap-perl libnats-dev nats-server libmicrohttpd-dev \
	libsodium-dev libjansson-dev pkg-config curl procps bc gcc clang jq systemd \
	wrk prometheus

.PHONY: deps node-deps run stop psql status test bench

deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "make deps: installing" $$missing; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make deps: all packages present"; fi
	@$(MAKE) --no-print-directory node-deps

# Node.js for the independent NATS test client (test/natsclient) and the relay
# benchmark (bench/relay_node), then their modules, exactly as package-lock.json
# pins them.  nodejs and npm are installed only when `npm` is missing: they are not
# in DEBIAN_PACKAGES because a NodeSource nodejs (which ships npm itself) conflicts
# with Debian's npm package, and apt would refuse.
NODE_DIRS = test/natsclient bench/relay_node

node-deps:
	@command -v npm >/dev/null || { echo "make deps: installing nodejs npm"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm; }
	@for d in $(NODE_DIRS); do \
	    if [ ! -f $$d/node_modules/.package-lock.json ] || [ $$d/package-lock.json -nt $$d/node_modules/.package-lock.json ]; then \
	        echo "make deps: npm ci in $$d"; \
	        npm ci --omit=dev --prefer-offline --no-audit --no-fund --prefix $$d >/dev/null || exit 1; \
	    fi; \
	done

stop:
	@tools/stack.sh run stop

status:
	@tools/stack.sh run status

psql:
	@tools/stack.sh run psql

ifneq ($(PGXS),)
# Built and installed into the local PostgreSQL: what run, test and bench start from.
.PHONY: installed
installed: deps
	@$(MAKE) --no-print-directory all
	@$(SUDO) $(MAKE) --no-print-directory install >/dev/null

run: installed
	@tools/stack.sh run start

test: installed node-deps
	@test/run.sh

bench: installed node-deps
	@bench/run.sh
endif
