# llm-assets: the two commands of the README, plus test-fast, dev and benchmarks.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export LLM_ASSETS_HOME ?= $(CURDIR)/.llm_assets

.PHONY: demo test test-fast dev bench venv clean

venv: $(VENV)/.installed

# torch first and pinned: `pip install torch==2.13.0` takes the CPU build from this disk;
# any other spec downloads a CUDA build of several GB.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## Run the whole graph end to end on the embedded defaults and print a summary.
demo: venv
	$(PY) -m llm_assets.cli demo

## Run the whole test suite, every mark (tests start their own broker, Milvus Lite, dagster dev and
## test LLM server; tests/services.sh installs and starts Debian's postgresql and chromium around it,
## and stops Postgres after). Two passes (tests/suite.sh): unit + integration on 2 workers, then the
## e2e and browser tests one at a time; each lists its 15 slowest tests.
test: venv
	bash tests/services.sh bash tests/suite.sh all

## The unit and integration tests only (the first pass of `make test`): no dagster dev stack, no browser.
## Postgres is still started (tests/deploy/test_postgres_instance.py is an integration test, which
## would otherwise skip), Chromium is not needed; an exported LLM_ASSETS_TEST_PG_URL is used instead.
test-fast: venv
	bash tests/services.sh --no-browser bash tests/suite.sh fast

## Dagster UI and daemon on 127.0.0.1:3000 with a local broker, Milvus Lite server and event generator.
## Quiet: one line when the UI is up; Ctrl-C (or SIGTERM) stops every process it started.
dev: venv
	@$(PY) -m llm_assets.cli dev

## Benchmarks: each prints its ratios against the goal.
bench: venv
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .llm_assets
