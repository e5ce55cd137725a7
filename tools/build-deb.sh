#!/usr/bin/env bash
# tools/build-deb.sh — `make deb`: the Debian packages postgresql-15-isa and
# isa-httpd, built from a clean copy of the checkout with the packaging of
# tools/debian/ (see its rules), left in .isa/deb/ with the build's log.
#
# The copy holds the files git knows or would add (tracked and new, not the
# ignored build products and stacks), as they are in the work tree: like
# `make test`, it builds what you have, committed or not.  The version is
# isa.control's default_version, which CHANGELOG.md must have a section for and
# META.json must state; while CHANGELOG.md calls it unreleased it is
# VERSION~dev.<date and time of HEAD>, which sorts before VERSION itself.
#
# DEB_BUILD_OPTIONS=nocheck skips the build's `make installcheck` against the
# packaged files (tools/installcheck.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
for need in dpkg-buildpackage dh pg_buildext; do
  command -v "$need" >/dev/null ||
    { echo "make deb: $need not found (packages dpkg-dev, debhelper, postgresql-server-dev-all: make deps)" >&2; exit 2; }
done
OUT=$ROOT/.isa/deb

version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" isa.control)
heading=$(grep -m 1 "^## ${version}[ (]" CHANGELOG.md) ||
  { echo "make deb: CHANGELOG.md has no section '## $version'" >&2; exit 1; }
meta=$(sed -n 's/^\t"version": "\(.*\)",$/\1/p' META.json | head -n 1)
[ "$meta" = "$version" ] ||
  { echo "make deb: META.json says version $meta, isa.control $version" >&2; exit 1; }
if [ -d .git ] || [ -f .git ]; then
  commit=$(git rev-parse --short HEAD)
  when=$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S)
  date=$(git log -1 --format=%cD)
  [ -z "$(git status --porcelain --untracked-files=no)" ] || commit="$commit with uncommitted changes"
else
  commit="no git checkout"
  when=$(date -u +%Y%m%d%H%M%S)
  date=$(date -R)
fi
debversion=$version
[[ $heading = *unreleased* ]] && debversion=$version~dev.$when

rm -rf "$OUT"
build=$OUT/isa-$debversion
mkdir -p "$build"
if [ -n "$(git ls-files 2>/dev/null | head -n 1)" ]; then
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$build"
else
  tar --exclude=./.isa --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
      --exclude='./isa--*.sql' --exclude=./httpd/isa-httpd -cf - . | tar -xf - -C "$build"
fi
cp -r "$build/tools/debian" "$build/debian"
cat >"$build/debian/changelog" <<CHANGELOG
isa ($debversion) unstable; urgency=medium

  * isa $version, built by make deb from $commit; see CHANGELOG.md.

 -- $(sed -n 's/^Maintainer: //p' "$build/debian/control.in")  $date
CHANGELOG

echo "make deb: building isa $debversion in .isa/deb/ (log: .isa/deb/build.log)"
if ! (cd "$build" && pg_buildext updatecontrol && dpkg-buildpackage -us -uc -b -j"$(nproc)") >"$OUT/build.log" 2>&1; then
  tail -n 40 "$OUT/build.log" >&2
  echo "make deb: dpkg-buildpackage failed; see .isa/deb/build.log" >&2
  exit 1
fi
rm -rf "$build"
for f in "$OUT"/*.deb; do echo "  ${f#"$ROOT"/}"; done
