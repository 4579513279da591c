# Every target installs first when needed, so each is one command on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench ui server reproduce clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes (the stamp is older than it).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: install
	$(BIN)/python experiments/run.py $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

lint: install
	$(BIN)/ruff check xent_tf experiments tests benchmarks
	$(BIN)/ruff format --check xent_tf experiments tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks.bench $(ARGS)

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# A shared tracking server for the team (loopback by default; SERVER_HOST=0.0.0.0 to expose it).
# DATABASE_URL=postgresql://user:pw@host/db uses PostgreSQL (pip install -e ".[scale]").
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5001
DATABASE_URL ?= sqlite:///mlflow-server.db
server: install
	$(BIN)/mlflow server --backend-store-uri "$(DATABASE_URL)" --serve-artifacts \
		--artifacts-destination ./mlartifacts --host $(SERVER_HOST) --port $(SERVER_PORT)

clean:
	rm -rf outputs multirun .pytest_cache .mypy_cache .ruff_cache
