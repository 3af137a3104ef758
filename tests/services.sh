#!/usr/bin/env bash
# The system services the test suite needs but cannot start itself, around one command:
#
#   bash tests/services.sh .venv/bin/pytest ARGS...                # Postgres and Chromium (make test)
#   bash tests/services.sh --no-browser .venv/bin/pytest ARGS...   # Postgres only (make test-fast: no browser test)
#
# The tests start most services they need themselves (tansu broker, Milvus Lite, dagster dev, the
# OpenAI-compatible test server), all on 127.0.0.1; this script installs and starts the two system
# ones: Debian's postgresql (a throwaway cluster) and chromium (for Playwright). It exits with the
# command's exit code, after stopping the Postgres it started (also when the command fails).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

browser=1
if [ "${1:-}" = "--no-browser" ]; then
  browser=0
  shift
fi
if [ $# -eq 0 ]; then
  echo "usage: $0 [--no-browser] COMMAND [ARGS...]" >&2
  exit 2
fi

# --- deploy tests (tests/deploy): a real Postgres for the production instance's storage ---------
# Debian's postgresql (apt-get, if missing), a throwaway cluster on 127.0.0.1 and a free port
# (tests/deploy/postgres.sh); the tests read LLM_ASSETS_TEST_PG_URL. Stopped when this script exits.
# An LLM_ASSETS_TEST_PG_URL already exported is used as it is: nothing is started or stopped then
# (each test creates a database of its own there and drops it).
if [ -z "${LLM_ASSETS_TEST_PG_URL:-}" ]; then
  pg_env="$(bash "$here/deploy/postgres.sh" start)"  # an assignment, so that a failed start stops here
  eval "$pg_env"
  trap 'bash "$here/deploy/postgres.sh" stop "$LLM_ASSETS_TEST_PG_DIR"' EXIT
fi
# --- end of the deploy tests block ----------------------------------------------------------------

# --- browser tests (tests/evaluation/test_rating_page.py, tests/ui/test_lineage_in_browser.py,
# tests/ui/test_new_user_walk.py; pytest -m browser): Debian's chromium, driven by Playwright.
# Playwright's own browser download fails here; the tests launch /usr/bin/chromium. The UI tests'
# screenshots land in $LLM_ASSETS_TEST_ARTIFACTS (default test-artifacts/).
if [ "$browser" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" != 0 ]; then echo "chromium is not installed and this is not root" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# --- end of the browser test block -----------------------------------------------------------------

set +e
"$@"
rc=$?
exit "$rc"  # the EXIT trap stops Postgres; the exit code stays the command's
