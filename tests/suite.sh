#!/usr/bin/env bash
# The test suite in two passes (make test; `make test-fast` runs the first one only):
#
#   bash tests/suite.sh [all|fast] [PYTEST ARGS...]
#
# 1. `unit` + `integration` on TEST_WORKERS pytest-xdist workers (default 2, one per core here),
#    a test file per worker at a time (`--dist loadfile`: a module's fixtures are built once), the slow
#    modules first (tests/conftest.py).
# 2. `e2e` + `browser` (everything else), one test at a time: each starts its own `dagster dev`
#    or `make dev` stack and waits on real sensor ticks, run monitoring and Ctrl-C, so they keep the
#    machine to themselves and their timings (the 10 s stop, recovery times) mean what they say.
#
# Exits non-zero when either pass fails or collects no test (both passes run either way).
set -u
cd "$(dirname "$0")/.."
pass="${1:-all}"
shift || true
pytest=(.venv/bin/pytest -q -p no:cacheprovider)
workers="${TEST_WORKERS:-2}"

run() {  # run NAME ARGS...: one pytest pass; exit code 5 (nothing collected) counts as a failure
  local name="$1"; shift
  echo "== $name"
  "${pytest[@]}" "$@"
  local rc=$?
  if [ "$rc" -eq 5 ]; then echo "$name: pytest collected no tests: failing on purpose"; rc=1; fi
  return "$rc"
}

run "unit + integration on $workers workers" -n "$workers" --dist loadfile --no-loadscope-reorder -m "unit or integration" \
  --durations=15 "$@"
fast=$?
if [ "$pass" = fast ]; then exit "$fast"; fi
run "e2e + browser, one at a time" -m "not (unit or integration)" --durations=15 "$@"
slow=$?
echo "== unit + integration: exit $fast; e2e + browser: exit $slow"
[ "$fast" -eq 0 ] && [ "$slow" -eq 0 ]
