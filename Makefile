# The two commands of the README: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m mailer.demo

test: $(STAMP)
	$(BIN)/ruff check mailer tests bench
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/import_bench.py --postgres

clean:
	rm -rf $(VENV) demo
