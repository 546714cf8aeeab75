# Two entry points for a newcomer: `make bench` (set up + run the benchmark) and `make test` (set up + run the tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# make bench installs what a run needs; make test adds the extras (pytest, selenium, ruff, ray, psycopg): about 20 s
# more of install that a newcomer's first make bench does not wait for
BASE := $(VENV)/.installed-base
FULL := $(VENV)/.installed-full

.PHONY: bench test lint setup clean

$(BASE): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(BASE)

$(FULL): $(BASE)
	$(BIN)/pip install --quiet -e '.[dev,ray,postgres]'
	touch $(FULL)

setup: $(FULL)

bench: $(BASE)
	$(BIN)/salt-bench run $(ARGS)

test: $(FULL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(FULL)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
