# The single source of commands: README, CI and people all call these targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The slowest tests, printed by every run: where the suite's time goes.
PYTEST_ARGS ?= --durations=10

.PHONY: demo serve test check lint format typecheck unit integration bench compose-smoke clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# uv installs the pinned set in seconds where pip takes minutes (the same versions: requirements.lock
	# pins every transitive one); uv itself is pinned here. The project installs editable. Bytecode is
	# compiled now, as pip does, not by the first processes of every run.
	$(BIN)/python -m pip install --quiet uv==0.9.30
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -c requirements.lock -e '.[dev]'
	touch $(STAMP)

## demo: the whole pipeline on this machine (Redis, MLflow, models, gateway, workers, producer)
demo: $(STAMP)
	$(BIN)/streamml up $(ARGS)

## serve: the models MODEL names (models:/Name@alias, or ROUTE=URI; several space-separated) from the
## registry at MLFLOW_TRACKING_URI, read-only: Redis, gateway, workers
serve: $(STAMP)
	@test -n "$(MODEL)" || { echo 'make serve MODEL=models:/Name@alias (the registry: MLFLOW_TRACKING_URI)'; exit 2; }
	$(BIN)/streamml serve $(MODEL) $(ARGS)

## test: the whole suite: lint and types beside the unit tests (each on a core of its own, each's output
## whole), then the integration tests (a failure stops it there)
test: $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target check unit
	$(MAKE) --no-print-directory integration

## unit: the tests that start no server process (the run's one Redis and sqlite registry only); minutes
unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

## integration: the tests that start gateways, workers, MLflow and Redis servers of their own
integration: $(STAMP)
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

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
