#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the store tests and prints the
# line that points them at it:
#
#   eval "$(scripts/postgres-test.sh)"   # or: eval "$(make -s postgres)"
#   go test ./internal/store/...
#
# Only the export line goes to stdout; progress goes to stderr. Re-running
# it while the cluster is up only prints the export line again. The cluster
# listens on 127.0.0.1 only, runs with fsync off and is meant to be thrown
# away: never point it at data you want to keep.
#
# Environment: PODID_PG_DIR (default /tmp/podid-pg), PODID_PG_PORT (default
# 55432).
set -euo pipefail

dir="${PODID_PG_DIR:-/tmp/podid-pg}"
port="${PODID_PG_PORT:-55432}"
role=podid
db=podid

log() { echo "postgres-test: $*" >&2; }

pgbin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$d" && -x "$d/initdb" ]] && echo "$d"
}

bin="$(pgbin || true)"
if [[ -z "$bin" ]]; then
  if [[ $EUID -ne 0 ]]; then
    log "PostgreSQL is not installed and installing it needs root: apt-get install postgresql"
    exit 1
  fi
  log "installing Debian's postgresql"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin="$(pgbin || true)"
  [[ -n "$bin" ]] || { log "no initdb under /usr/lib/postgresql/*/bin after installing postgresql"; exit 1; }
fi

# PostgreSQL refuses to run as root: as root, run the server and the admin
# client as the postgres user; otherwise as the current user.
if [[ $EUID -eq 0 ]]; then
  owner=postgres
  as_owner() { runuser -u postgres -- "$@"; }
else
  owner="$(id -un)"
  as_owner() { "$@"; }
fi

data="$dir/data"
sock="$dir/sock"
mkdir -p "$dir"
if [[ $EUID -eq 0 ]]; then chown "$owner" "$dir"; fi
chmod 700 "$dir"

if [[ ! -s "$data/PG_VERSION" ]]; then
  log "creating a cluster in $data"
  as_owner mkdir -p "$sock"
  as_owner "$bin/initdb" -D "$data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  # A random password per cluster, kept beside it so re-runs print the same URL.
  as_owner sh -c "umask 077; od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > '$dir/password'"
fi
as_owner mkdir -p "$sock"

if ! as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  log "starting PostgreSQL on 127.0.0.1:$port"
  # Throwaway test cluster: durability is traded for speed.
  as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $sock -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { log "PostgreSQL did not start; see $dir/server.log"; tail -n 20 "$dir/server.log" >&2 || true; exit 1; }
fi

for _ in $(seq 1 60); do
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then break; fi
  sleep 0.5
done
"$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || { log "PostgreSQL on 127.0.0.1:$port is not ready"; exit 1; }

password="$(as_owner cat "$dir/password")"
psql_admin() { as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres "$@"; }

# The role creates a fresh database per test, so it needs CREATEDB.
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$role'")" != 1 ]]; then
  psql_admin -c "CREATE ROLE $role LOGIN CREATEDB PASSWORD '$password'"
fi
# DROP DATABASE ... WITH (FORCE) at test cleanup must be able to end an
# autovacuum worker busy in that database.
psql_admin -c "SET client_min_messages TO warning; GRANT pg_signal_backend TO $role"
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
  psql_admin -c "CREATE DATABASE $db OWNER $role"
fi

echo "export PODID_TEST_POSTGRES=postgres://$role:$password@127.0.0.1:$port/$db?sslmode=disable"
