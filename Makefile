# Two set-up commands: `make demo` (main job) and `make test` (lint + tests). Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lowbit-installed

.PHONY: demo test report bench clean

$(STAMP): pyproject.toml requirements/dev.txt requirements/constraints.txt requirements/nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt -c requirements/constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/nodeps.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lowbit report --quick --out lowbit-report

report: $(STAMP)
	$(BIN)/lowbit report --out lowbit-report

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) lowbit-report .pytest_cache .ruff_cache
