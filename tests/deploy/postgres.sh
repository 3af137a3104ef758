#!/usr/bin/env bash
# A throwaway Postgres on 127.0.0.1 for tests/deploy (the production instance's storage).
#
#   eval "$(tests/deploy/postgres.sh start)"   # installs Debian's postgresql if missing, starts a fresh
#                                               # cluster in a temp folder on a free port, prints exports
#   tests/deploy/postgres.sh stop "$LLM_ASSETS_TEST_PG_DIR"
#
# tests/services.sh runs it around `make test` and `make test-fast`.
#
# The tests read LLM_ASSETS_TEST_PG_URL (and skip, saying why, when it is unset). Its own variable,
# never DAGSTER_PG_*, so a shell that points at a real instance cannot send test runs there.
set -euo pipefail

as_postgres() {  # initdb and the server refuse to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

start() {
  if ! pg_bin >/dev/null; then
    if [ "$(id -u)" != 0 ]; then echo "postgresql is not installed and this is not root" >&2; exit 1; fi
    # Quiet: stdout is eval'ed by the caller.
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
  fi
  local bin dir port
  bin="$(pg_bin)"
  dir="$(mktemp -d -t llm-assets-pg.XXXXXX)"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log"
  # Loopback only, the socket in the temp folder (the default /run/postgresql may not exist).
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir" start >&2
  as_postgres "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE dagster LOGIN CREATEDB PASSWORD 'dagster'" >&2
  echo "export LLM_ASSETS_TEST_PG_URL=postgresql://dagster:dagster@127.0.0.1:$port/postgres"
  echo "export LLM_ASSETS_TEST_PG_DIR=$dir"
}

stop() {
  local dir="${1:?usage: postgres.sh stop DIR}"
  as_postgres "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
