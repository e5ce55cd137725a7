# The Debian packages (tools/debian, docs/install.md "From the Debian package"):
# `make deb` builds postgresql-15-isa and isa-httpd, dpkg -i installs them, a
# fresh cluster preloads the packaged isa and its bridge starts, isa-httpd
# started by the packaged unit's ExecStart answers /live, and dpkg --purge
# leaves none of their files.  Then the development install (make install of
# this checkout) is put back, also when an assertion or a command fails.
#
# Installing the packages replaces the files of `make install` for everyone
# on this machine: the window lasts from dpkg -i to the end, about 15 s.
# Ports 29420 (PostgreSQL), 29421 (isa-httpd); NATS is never reachable (29422).
source "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
pg_port=29420 http_port=29421 nats_port=29422
pgbin=/usr/lib/postgresql/15/bin
packages=(postgresql-15-isa isa-httpd)
version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$root/isa.control")
work=$(mktemp -d /tmp/isa-package.XXXXXX)
chmod 755 "$work"
chown postgres: "$work"
as_pg=(runuser -u postgres --)
httpd_pid=
restored=0

restore_dev_install() { make -s -C "$root" install >"$work/make-install.log" 2>&1; }
cleanup() {
  [ -n "$httpd_pid" ] && kill "$httpd_pid" 2>/dev/null
  (cd / && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -m immediate stop) >/dev/null 2>&1
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^.[^n]' && dpkg --purge "$p" >/dev/null 2>&1
  done
  [ "$restored" = 1 ] || restore_dev_install
  rm -rf "$work"
}
trap cleanup EXIT

q() { psql -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c "$@" 2>&1; }

# ---------------------------------------------------------------- build
make -s -C "$root" deb >"$work/make-deb.log" 2>&1
debs=()
for p in "${packages[@]}"; do
  f=("$root"/.isa/deb/"${p}"_*.deb)
  ok "make deb leaves one ${p}_….deb in .isa/deb/" test "${#f[@]}" = 1 -a -f "${f[0]}"
  debs+=("${f[0]}")
done
if [ ! -f "${debs[0]}" ] || [ ! -f "${debs[1]}" ]; then
  sed 's/^/#   /' "$work/make-deb.log"
  done_testing
  exit 1
fi

# ---------------------------------------------------------------- install
ok "dpkg -i installs both packages" dpkg -i "${debs[@]}"
for p in "${packages[@]}"; do
  is "$(dpkg-query -W -f='${Status}' "$p" 2>&1)" "install ok installed" "$p is installed"
  dpkg -L "$p" >"$work/$p.files"
done
is "$(dpkg -S /usr/lib/postgresql/15/lib/isa.so /usr/share/postgresql/15/extension/isa.control 2>&1 | cut -d: -f1 | sort -u)" \
  postgresql-15-isa "postgresql-15-isa holds isa.so and isa.control"
# the scripts make install installs: the kept ones of sql/released/ and the built ones
want=$(for f in "$root"/sql/released/isa--*.sql "$root"/isa--*.sql; do basename "$f"; done | sort)
got=$(sed -n 's|^/usr/share/postgresql/15/extension/\(isa--.*\.sql\)$|\1|p' "$work/postgresql-15-isa.files" | sort)
is "$got" "$want" "postgresql-15-isa holds every SQL script that make install installs"
got=$(cd "$root/tools/monitoring" && for f in *; do
        cmp -s "$f" "/usr/share/doc/isa-httpd/examples/monitoring/$f" && echo "$f"; done | tr '\n' ' ')
is "$got" "$(cd "$root/tools/monitoring" && ls | tr '\n' ' ')" \
  "isa-httpd ships tools/monitoring/ (scrape config, alerts and their tests, dashboard) uncompressed in its examples"
is "$(stat -c '%U:%G %a' /etc/isa /etc/isa/httpd.conf 2>&1 | tr '\n' ' ')" "root:isa-httpd 750 root:isa-httpd 640 " \
  "/etc/isa and its httpd.conf are readable by group isa-httpd only"

# ---------------------------------------------------------------- the extension
(cd / && "${as_pg[@]}" "$pgbin/initdb" -D "$work/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8) >"$work/initdb.log" 2>&1
"${as_pg[@]}" tee -a "$work/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work'
shared_preload_libraries = 'pg_cron,isa'
cron.database_name = 'postgres'
isa.database = 'postgres'
isa.nats_url = 'nats://127.0.0.1:$nats_port'
CONF
ok "a fresh cluster with the packaged isa and pg_cron preloaded starts" \
  bash -c "cd / && runuser -u postgres -- $pgbin/pg_ctl -D $work/data -l $work/postgresql.log -w -t 30 start"
ok "CREATE EXTENSION isa CASCADE succeeds" q "CREATE EXTENSION isa CASCADE"
is "$(q "SELECT extversion FROM pg_extension WHERE extname = 'isa'")" "$version" "the extension is at isa.control's default_version"

# The bridge looks for the extension every 5 s; with no NATS it runs, unconnected.
is "$(for _ in $(seq 150); do r=$(q "SELECT running FROM isa.bridge_status()"); [ "$r" = t ] && break; sleep 0.1; done; echo "$r")" t \
  "the bridge worker starts once the extension exists"
is "$(q "SELECT count(*) FROM pg_stat_activity a JOIN isa.bridge_status() b USING (pid) WHERE a.backend_type = 'isa bridge'")" 1 \
  "pg_stat_activity shows it as the 'isa bridge' backend"
is "$(q "SELECT connected FROM isa.bridge_status()")" f "it is not connected: no NATS server answers"

# ---------------------------------------------------------------- isa-httpd
unit=/lib/systemd/system/isa-httpd.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit" 2>/dev/null)
like "$exec_start" '^/usr/bin/isa-httpd --config /etc/isa/httpd.conf$' "the packaged unit starts /usr/bin/isa-httpd with /etc/isa/httpd.conf"
q "CREATE ROLE isa_httpd LOGIN IN ROLE isa_app, isa_app_admin" >/dev/null
cat >>/etc/isa/httpd.conf <<CONF
listen = 127.0.0.1
port = $http_port
database_url = host=127.0.0.1 port=$pg_port dbname=postgres user=isa_httpd
CONF
# As the unit runs it: an unprivileged user in the supplementary group isa-httpd.
read -ra cmd <<<"$exec_start"
runuser -u nobody -G isa-httpd -- "${cmd[@]}" >"$work/httpd.log" 2>&1 &
httpd_pid=$!
code=000
for _ in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/live" 2>/dev/null)
  [ "$code" = 200 ] && break
  kill -0 "$httpd_pid" 2>/dev/null || break
  sleep 0.1
done
is "$code" 200 "isa-httpd, started by the unit's ExecStart as a member of isa-httpd, answers /live with 200"
[ "$code" = 200 ] || sed 's/^/#   /' "$work/httpd.log"

# ---------------------------------------------------------------- purge
kill "$httpd_pid" 2>/dev/null
wait "$httpd_pid" 2>/dev/null
httpd_pid=
(cd / && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -m fast -w stop) >/dev/null 2>&1
ok "dpkg --purge removes both packages" dpkg --purge "${packages[@]}"
for p in "${packages[@]}"; do
  left=$(while read -r f; do [ -e "$f" ] && [ ! -d "$f" ] && echo "$f"; done <"$work/$p.files")
  is "$left" "" "no file of $p is left"
done
ok "/etc/isa is gone" test ! -e /etc/isa
is "$(dpkg-statoverride --list '/etc/isa*')" "" "no statoverride of /etc/isa is left"

restore_dev_install
restored=1
is "$(cmp "$root/isa--$version.sql" "/usr/share/postgresql/15/extension/isa--$version.sql" 2>&1 && test -f /usr/lib/postgresql/15/lib/isa.so && echo restored)" \
  restored "make install puts the development install back"

done_testing
