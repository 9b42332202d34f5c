# Every target creates .venv itself, so a fresh clone needs nothing but python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TIV    := $(BIN)/tiv

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files record what was installed, so a change to pyproject.toml reinstalls.
# The server, ui and applications extras are installed too: `make serve` runs the service
# with the workbench and the application endpoints.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server,ui,applications]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,server,ui,applications]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(TIV) value examples/shipments/seed-electronics.yaml --policy standard

# The HTTP service with the /ui workbench on loopback, recording to audit.sqlite.
PORT ?= 8000
serve: $(VENV)/.installed
	@echo "tiv workbench: http://127.0.0.1:$(PORT)/ui   (API docs: http://127.0.0.1:$(PORT)/docs)"
	$(TIV) serve --port $(PORT) --audit $(or $(AUDIT),audit.sqlite)

test: $(VENV)/.installed-dev
	$(BIN)/ruff check engine tests bench examples
	$(BIN)/ruff format --check engine tests bench examples
	$(MAKE) --no-print-directory typecheck
	$(TIV) validate
	$(TIV) test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The core suite while you work: everything in `test` but the integration suites that drive
# real outside parts (headless Chromium, PostgreSQL, Spark). CI runs `test`, never this.
quick: $(VENV)/.installed-dev
	$(BIN)/ruff check engine tests bench examples
	$(BIN)/ruff format --check engine tests bench examples
	$(MAKE) --no-print-directory typecheck
	$(TIV) validate
	$(TIV) test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not browser and not integration and not spark"

# mypy --strict on all of engine/ (configured under [tool.mypy] in pyproject.toml).
typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy --strict

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check engine tests bench examples
	$(BIN)/ruff format --check engine tests bench examples

bench: $(VENV)/.installed
	$(BIN)/python bench/value_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
