# Every target installs first when needed, so each is one command on a fresh clone.
# ROOT: this Makefile's directory. `make -f <repo>/Makefile reproduce VENV=<repo>/.venv` (or
# sync) works from any directory: Hydra's outputs/ and multirun/ and ./mlflow.db are then that
# directory's. VENV stays relative: tests name its stamp files so (`-o .venv/.installed`).
ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The notebooks' Jupyter kernel (notebooks/*.ipynb ask for "xent-tf"): this venv's python,
# registered inside the venv, so Jupyter run from it (or VS Code pointed at it) finds it.
KERNEL := $(VENV)/share/jupyter/kernels/xent-tf/kernel.json

.PHONY: install install-scale install-reference lock check-latest run test test-unit test-integration conformance fuzz lint bench performance-doc ui server sync reproduce evidence clean

# Every install comes from uv.lock (every package, transitive ones included, at an exact version
# with its hashes): two users a month apart get the same code. `make lock` re-resolves it from
# pyproject.toml; nothing else changes it (uv sync --frozen). uv itself is locked too: a fresh
# venv gets pip's uv at the locked version, which then installs the lock.
UV := $(BIN)/uv
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' $(ROOT)uv.lock)
# uv sync installs into $(VENV) (relative to where make runs) whatever the project directory.
# --compile-bytecode: the installed packages' .pyc files are written once, here. Without them a
# process under PYTHONDONTWRITEBYTECODE=1 (common in containers; CI's machine sets it) compiles
# every module of MLflow, TensorFlow, pandas... from source again on each start, in every run.py
# process, sweep worker and test process.
UV_SYNC = UV_PROJECT_ENVIRONMENT="$(abspath $(VENV))" $(UV) sync --frozen --project "$(ROOT)" --quiet --compile-bytecode

install: $(STAMP) $(KERNEL)

# Re-installs only when pyproject.toml or the lock changes (the stamp is older than either).
# Exact: a package the lock's dev set does not hold is removed (the extras' stamps then redo).
$(STAMP): $(ROOT)pyproject.toml $(ROOT)uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if ! test -x $(UV); then \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; \
	elif [ "$$($(UV) --version | cut -d' ' -f2)" != "$(UV_VERSION)" ]; then \
		$(UV) pip install --quiet --python $(BIN)/python "uv==$(UV_VERSION)"; \
	fi
	$(UV_SYNC) --extra dev
	touch $(STAMP)

$(KERNEL): $(STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name xent-tf --display-name "xent-tf (.venv)" > /dev/null
	test -f $(KERNEL)

# The reference extra (PyTorch, a CPU-or-CUDA wheel of several GB on Linux x86_64): C7 runs
# PyTorch's own cross-entropy next to Keras's, and `make reproduce` installs it so that C7 is
# measured (without it C7 is inconclusive, not measured).
REFERENCE_STAMP := $(VENV)/.installed-reference
install-reference: $(REFERENCE_STAMP)

$(REFERENCE_STAMP): $(STAMP)
	$(UV_SYNC) --inexact --extra dev --extra reference
	touch $(REFERENCE_STAMP)

# The scale-out extras (Ray launcher, psycopg2, MLflow's auth app) and the reference extra:
# the integration tests need them all.
SCALE_STAMP := $(VENV)/.installed-scale
install-scale: $(SCALE_STAMP)

$(SCALE_STAMP): $(STAMP)
	$(UV_SYNC) --inexact --extra dev --extra scale --extra reference
	touch $(SCALE_STAMP) $(REFERENCE_STAMP)

# Re-resolve uv.lock from pyproject.toml (after changing a dependency there; commit both).
lock: install
	$(UV) lock --project "$(ROOT)"

# Tomorrow's releases before they bite: the newest versions pyproject.toml allows, in a throw-away
# venv, against the unit suite and a tiny study; prints which packages differ from the lock.
# Not part of CI (it would make CI depend on the day).
check-latest: install
	$(BIN)/python $(ROOT)tools/check_latest.py --uv $(UV) $(ARGS)

run: install
	$(BIN)/python experiments/run.py $(ARGS)

# Unit tests on both cores (pytest-xdist: each test file's tests in either of two processes),
# then the integration tests (PostgreSQL, mlflow server, Ray, Chromium: see tests/integration)
# on three workers: most of their time is waiting for processes they start, and their
# timeouts allow for a loaded machine. ARGS go to both (e.g. ARGS='-k ledger'); test-unit /
# test-integration run one.
test: test-unit test-integration

# worksteal: a worker that runs out of tests takes pending ones from the other (a few tests
# take a minute each, and the default split can leave one worker idle at the end).
test-unit: install-scale
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not integration" $(ARGS)

# loadgroup: the tests of one xdist_group run in one worker, one after another: every Ray test
# ("ray": one Ray instance at a time), the readers of the session's PostgreSQL-backed study
# ("pg_study": it is trained once) and the accounts tests (their server starts once). Three
# workers on two cores: these tests spend much of their time waiting for the processes and
# servers they start (the phase used 1.2 cores on average with two workers).
test-integration: install-scale
	$(BIN)/python -m pytest -q -n 3 --dist loadgroup -m integration $(ARGS)

# Hydra's launcher conformance suites in full: every case of IntegrationTestSuite for every
# launcher (`make test` runs a sample of them, see tests/test_launcher_conformance.py).
conformance: install-scale
	XENT_CONFORMANCE=full $(BIN)/python -m pytest -q -n 2 --dist loadgroup \
		tests/test_launcher_conformance.py $(ARGS)

# The bad-input campaign (tests/fuzz) at length: XENT_FUZZ_SCALE (default 20) times the
# examples `make test` runs, random instead of derandomized, failures kept in .hypothesis/;
# prints the table of cases (kind of input -> tried -> refused -> slipped) and writes it to
# FUZZ_TABLE.
FUZZ_TABLE ?= reports/fuzz_table.md
fuzz: install
	XENT_FUZZ_PROFILE=fuzz XENT_FUZZ_TABLE=$(FUZZ_TABLE) $(BIN)/python -m pytest -q -n 2 \
		--dist worksteal tests/fuzz $(ARGS)

lint: install
	$(BIN)/ruff check xent_tf experiments tests benchmarks hydra_plugins tools
	$(BIN)/ruff format --check xent_tf experiments tests benchmarks hydra_plugins tools
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache  # the layering contracts of pyproject.toml

# The bench writes benchmarks/results/latest.json (a section not run keeps its last result), then
# docs/PERFORMANCE.md is rendered from it, also when a section failed (make's exit status is the
# bench's). performance-doc only re-renders (after changing how the doc or a table is drawn).
bench: install
	status=0; $(BIN)/python -m benchmarks.bench $(ARGS) || status=$$?; \
	$(BIN)/python -m benchmarks.performance_doc && exit $$status

performance-doc: install
	$(BIN)/python -m benchmarks.performance_doc

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# A shared tracking server for the team (loopback by default; SERVER_HOST=0.0.0.0 to expose it,
# with SERVER_ARGS="--allowed-hosts NAME:PORT" as MLflow's security middleware asks).
# DATABASE_URL=postgresql://user:pw@host/db uses PostgreSQL (the scale extras bring its driver).
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5001
SERVER_WORKERS ?= 4
SERVER_ARGS ?=
DATABASE_URL ?= sqlite:///mlflow-server.db
ARTIFACTS_DIR ?= ./mlartifacts
# Accounts (MLflow's basic-auth app, per-experiment permissions): SERVER_AUTH=1. The admin's
# password comes from MLFLOW_AUTH_ADMIN_PASSWORD or from the file ADMIN_PASSWORD_FILE, never from
# the repo; it is read only the first time, to create the admin in the (empty) user store
# AUTH_DATABASE_URL. Users get AUTH_DEFAULT_PERMISSION on experiments they did not create (READ:
# they can look, not log); clients pass MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
# The UI's CSRF key is MLFLOW_FLASK_SERVER_SECRET_KEY, or a new random one at each start.
SERVER_AUTH ?=
ADMIN_PASSWORD_FILE ?=
AUTH_DATABASE_URL ?= sqlite:///mlflow-auth.db
AUTH_DEFAULT_PERMISSION ?= READ
AUTH_CONFIG ?= .mlflow-auth-$(SERVER_PORT).ini
# MLflow's server-side jobs (GenAI evaluation, trace roll-ups) start a task queue with ten
# workers and cost seconds at every start; nothing here uses them, so they are off unless
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true is set.
server: install-scale
	set -e; app=""; \
	if [ -n "$(SERVER_AUTH)" ]; then \
		if [ -n "$(ADMIN_PASSWORD_FILE)" ]; then \
			MLFLOW_AUTH_ADMIN_PASSWORD="$$(cat "$(ADMIN_PASSWORD_FILE)")"; \
			export MLFLOW_AUTH_ADMIN_PASSWORD; \
		fi; \
		printf '[mlflow]\ndefault_permission = %s\ndatabase_uri = %s\nadmin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
			"$(AUTH_DEFAULT_PERMISSION)" "$(AUTH_DATABASE_URL)" > "$(AUTH_CONFIG)"; \
		export MLFLOW_AUTH_CONFIG_PATH="$(AUTH_CONFIG)"; \
		if [ -z "$$MLFLOW_FLASK_SERVER_SECRET_KEY" ]; then \
			MLFLOW_FLASK_SERVER_SECRET_KEY="$$($(BIN)/python -c 'import secrets; print(secrets.token_hex(32))')"; \
			export MLFLOW_FLASK_SERVER_SECRET_KEY; \
		fi; \
		app="--app-name basic-auth"; \
	fi; \
	export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"; \
	exec $(BIN)/mlflow server --backend-store-uri "$(DATABASE_URL)" --serve-artifacts \
		--artifacts-destination "$(ARTIFACTS_DIR)" --host $(SERVER_HOST) --port $(SERVER_PORT) \
		--workers $(SERVER_WORKERS) $$app $(SERVER_ARGS)

# Send what the runs under DIR kept in their spools while the tracking server was away
# (a sweep's directory, or one job's): make sync DIR=multirun/mse_vs_ce/2026-01-01_12-00-00
sync: install
	$(BIN)/python $(ROOT)experiments/report.py --sync "$(DIR)"

# Every comparison study with its default 10 seeds (replica batches), then the claims ledger, which reads those
# studies from the same store and prints the verdict table (C1-C16). One process runs them all
# (experiments/reproduce.py: each study as `run.py -m +experiment=STUDY` would, with one pool of
# worker processes for every study), so TensorFlow is imported once per worker, not per study.
# ARGS go to every step, e.g. make reproduce ARGS="tracking.uri=sqlite:////abs/store.db";
# The studies run the seeds the ledger judges: claims.seeds (lr_sweep twice as many: C13 picks its
# roles on one half), e.g. 3 seeds: ARGS="claims.seeds=3"; STUDY_ARGS to the study sweeps only
# (seeds named there win, e.g. STUDY_ARGS="seed=0,1,2").
# +resume=matching: started again after an interruption (Ctrl-C, a crash, a killed process), each
# study continues its newest sweep with the same study definition and trains only the jobs that
# did not FINISH (same config hash); a finished study only re-reports; a study with no such
# sweep (none yet, or only ad-hoc sweeps of other settings) starts one.
# tests/integration/test_reproduce.py kills it after its first study and starts it again.
# STUDIES (default: the four studies the ledger judges, in reproduce.py's order) picks and orders them.
STUDIES ?=
STUDY_ARGS ?=
reproduce: install-reference
	$(BIN)/python $(ROOT)experiments/reproduce.py $(if $(STUDIES),--studies "$(STUDIES)") \
		--study-args "$(STUDY_ARGS)" $(ARGS)

# The full evidence: every study on every data set of claims.datasets=all (configs/data: the
# reference, breast_cancer, digits, wine, moons, circles, label_noise, imbalanced), seeds
# 0 .. 2 x claims.seeds - 1 (two disjoint seed sets), then the ledger, whose headline is the
# claim x data set table. One process and one worker pool for all of it (experiments/reproduce.py
# --datasets all --stability), one line per study and data set with the time left;
# +resume=matching: started again, it trains only what did not finish. docs/EVIDENCE.md.
# DATASETS picks data sets (names from configs/data); ARGS and STUDY_ARGS as for reproduce,
# e.g. make evidence DATASETS="reference moons" ARGS="claims.seeds=3".
DATASETS ?= all
evidence: install-reference
	$(BIN)/python $(ROOT)experiments/reproduce.py --datasets "$(DATASETS)" --stability \
		$(if $(STUDIES),--studies "$(STUDIES)") --study-args "$(STUDY_ARGS)" $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache .mypy_cache .ruff_cache
