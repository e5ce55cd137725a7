# tools/dev.mk — the developer commands of the README, included by the
# Makefile (which itself only builds and installs):
#
#   make run     install what is missing, build, start PostgreSQL + NATS + isa-httpd under ./.isa/run
#   make test    the same on private ports under ./.isa/test, then every test
#   make bench   benchmarks, each printing one comparable line
#   make stop    stop the `make run` stack;  make psql  open a shell on it
#   make deps    apt-get the Debian packages isa builds and runs with
#   make installcheck  the pgTAP files that need no NATS, on a throw-away cluster,
#                against the isa installed (make install or the Debian package)
#   make deb     the Debian packages postgresql-15-isa and isa-httpd, in .isa/deb/

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

DEBIAN_PACKAGES = \
	postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-pgtap \
	libtap-parser-sourcehandler-pgtap-perl libnats-dev nats-server libmicrohttpd-dev \
	libsodium-dev libjansson-dev pkg-config curl procps bc gcc clang jq systemd \
	wrk prometheus python3-yaml mosquitto-clients libcurl4-openssl-dev python3-aiosmtpd \
	debhelper postgresql-server-dev-all dpkg-dev

.PHONY: deps node-deps run stop psql status test bench installcheck deb

deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "make deps: installing" $$missing; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make deps: all packages present"; fi
	@$(MAKE) --no-print-directory node-deps

# Node.js for the independent NATS test client (test/natsclient), the relay
# benchmark (bench/relay_node) and the MQTT fleet (bench/device_presence), then
# their modules, exactly as package-lock.json
# pins them.  nodejs and npm are installed only when `npm` is missing: they are not
# in DEBIAN_PACKAGES because a NodeSource nodejs (which ships npm itself) conflicts
# with Debian's npm package, and apt would refuse.
NODE_DIRS = test/natsclient bench/relay_node bench/device_presence

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

# PGXS defines installcheck too, with a recipe only when REGRESS (pg_regress)
# is set, which isa does not use: this adds the one recipe, so make does not
# warn of an overridden one.  Like PGXS's, it tests what is installed and
# builds nothing (tools/installcheck.sh).
installcheck:
	@tools/installcheck.sh

# Packages to install: the build needs a clean copy, not this tree's objects.
deb:
	@tools/build-deb.sh

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
else
# On a fresh machine pg_config (postgresql-server-dev-15) is not there yet:
# install the packages, then make the same goal again, now with PGXS.
run test bench:
	@$(MAKE) --no-print-directory deps
	@command -v $(PG_CONFIG) >/dev/null || { echo "$(PG_CONFIG) not found after make deps" >&2; exit 1; }
	@$(MAKE) --no-print-directory $@
endif
