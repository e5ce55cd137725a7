# httpd/isa-httpd.service, the systemd unit for operators: systemd-analyze
# verify accepts it (with ExecStart pointed at the binary of this checkout),
# and `make install-httpd` puts the binary where the unit expects it.
source "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sed "s|/usr/local/bin/isa-httpd|$root/httpd/isa-httpd|" "$root/httpd/isa-httpd.service" >"$work/isa-httpd.service"
out=$(systemd-analyze verify "$work/isa-httpd.service" 2>&1)
is "$out" "" "systemd-analyze verify finds nothing wrong in the unit"

make -s -C "$root" install-httpd DESTDIR="$work/root" >/dev/null 2>&1
ok "make install-httpd installs /usr/local/bin/isa-httpd (under DESTDIR)" test -x "$work/root/usr/local/bin/isa-httpd"
like "$(grep '^ExecStart=' "$root/httpd/isa-httpd.service")" '^ExecStart=/usr/local/bin/isa-httpd ' \
  "the unit starts the binary install-httpd installs"
ok "the installed binary answers --help" "$work/root/usr/local/bin/isa-httpd" --help

done_testing
