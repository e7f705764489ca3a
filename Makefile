# Conserved: the two commands of the README.
#   make book   set up .venv if needed, then build _build/html with every notebook executed (full mode)
#   make test   set up .venv if needed, then run the test suite (library, notebooks in quick mode, book build)
# Other targets: make lint, make quick-book, make clean.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Notebooks draw with the inline backend; an inherited MPLBACKEND=Agg would hide every figure.
unexport MPLBACKEND

.PHONY: book quick-book test lint clean setup

setup: $(STAMP)

# Bootstrap: a virtual environment with Python >= 3.11, the package (editable) with its book and
# dev extras, every transitive dependency held to requirements.lock.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Conserved needs Python >= 3.11; set PYTHON=/path/to/python3.11 (found " + sys.version.split()[0] + ")")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[book,dev]'
	@touch $(STAMP)

book: $(STAMP)
	CONSERVED_MODE=full $(BIN)/jupyter-book build . --all -W --keep-going
	@echo "Open _build/html/index.html"

# The same build in quick mode (what the test suite builds), into _build/quick.
quick-book: $(STAMP)
	CONSERVED_MODE=quick $(BIN)/jupyter-book build . --all -W --keep-going --path-output _build/quick

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check lib tests chapters
	$(BIN)/ruff format --check lib tests

clean:
	rm -rf _build .pytest_cache .hypothesis
