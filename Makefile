# The single source of commands: README, CI and people all call these targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check lint format typecheck unit bench compose-smoke clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# requirements.lock pins every transitive version; the project itself installs editable.
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

## demo: the whole pipeline on this machine (Redis, MLflow, models, gateway, workers, producer)
demo: $(STAMP)
	$(BIN)/streamml up $(ARGS)

## test: fast static checks first, then the suite against real Redis and MLflow
test: check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/streamml bench $(ARGS)

## compose-smoke: the compose stack in real containers (needs a Docker engine and debootstrap; root)
compose-smoke: $(STAMP)
	deploy/smoke/run

clean:
	rm -rf $(VENV) .streamml .pytest_cache .mypy_cache .ruff_cache
