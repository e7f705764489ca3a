# Conserved: the two commands of the README.
#   make book   set up .venv if needed, then build _build/html with every notebook executed (full mode)
#   make test   set up .venv if needed, then run the test suite (library, notebooks in quick mode, book build)
# Other targets: make check-html, make browser, make lint, make quick-book, make bench, make paper-smoke,
# make clean, and the editions: make notebooks, make pdf, make lab (see the README).
#
# Settings (make VAR=value):
#   MODE=full|quick        the run mode of make book, make pdf, make notebooks (default full)
#   FRESH=1                make book / quick-book / pdf: re-execute every notebook (the execution
#                          cache is emptied and refilled)
#   REPOSITORY_URL=https://github.com/ORG/REPO
#                          the book's repository (overrides repository.url in _config.yml): adds
#                          the repository, Binder and Colab buttons; unset, there are none
#   EDITION=student        make pdf without solutions (default: instructor, with them)
#   PUBLISH=1              make notebooks also commits them to the branch `notebooks` (for Colab)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Notebooks draw with the inline backend; an inherited MPLBACKEND=Agg would hide every figure.
unexport MPLBACKEND

# The built book that `make check-html` opens in the browser (make book's output by default;
# HTML_DIR=$(QUICK_HTML) for make quick-book's, which the test suite's book build also writes).
HTML_DIR   ?= _build/html
QUICK_HTML := _build/quick/_build/html

MODE           ?= full
EDITION        ?= instructor
FRESH          ?=
PUBLISH        ?=
REPOSITORY_URL ?=
# What every build passes to Jupyter Book (tools/editions.py reads these).
EDITION_ENV = $(if $(FRESH),CONSERVED_FRESH=1) \
  $(if $(REPOSITORY_URL),CONSERVED_REPOSITORY_URL=$(REPOSITORY_URL))
LAB_STAMP := $(VENV)/.lab-installed
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json

.PHONY: book quick-book test lint clean setup browser check-html notebooks pdf lab bench paper-smoke

setup: $(STAMP)

# Bootstrap: a virtual environment with Python >= 3.11, the package (editable) with its book and
# dev extras, every transitive dependency held to requirements.lock. pip installs uv (pinned) and
# uv installs the rest: set-up takes about 30 s instead of pip's 99 s on 2 cores. Where uv
# cannot (another index set-up in pip.conf, which uv does not read), pip installs the same pins
# itself. Bytecode is compiled: the autograder's kernels run with PYTHONDONTWRITEBYTECODE, so
# each would compile the modules it imports again (make test took minutes longer).
UV_PIN  := uv==0.13.9
INSTALL = $(BIN)/python -m pip install --quiet --disable-pip-version-check $(UV_PIN) \
  && $(BIN)/python -m uv pip install --quiet --python $(BIN)/python --compile-bytecode -c requirements.lock -e $(EXTRAS) \
  || { echo "uv could not install the pins; pip installs them"; \
       $(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e $(EXTRAS); }
$(STAMP): EXTRAS = '.[book,dev]'
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Conserved needs Python >= 3.11; set PYTHON=/path/to/python3.11 (found " + sys.version.split()[0] + ")")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(INSTALL)
	@touch $(STAMP)

# Notebooks run through the execution cache (_config.yml): a second build with nothing changed
# executes nothing; FRESH=1 executes everything.
book: $(STAMP)
	CONSERVED_MODE=$(MODE) $(EDITION_ENV) $(BIN)/jupyter-book build . --all -W --keep-going
	@echo "Open _build/html/index.html"

# The same build in quick mode (what the test suite builds), into _build/quick.
quick-book: $(STAMP)
	CONSERVED_MODE=quick $(EDITION_ENV) $(BIN)/jupyter-book build . --all -W --keep-going --path-output _build/quick

# The browser tests (tests/test_check_html.py) need Chromium: installed here when it can be
# (as root); elsewhere they skip and say why (under CI=true they fail instead).
# Tests run in TEST_WORKERS processes (pytest-xdist); the book build (one module) and each
# chapter's two tests (one class) stay on one worker (loadscope). Each chapter executes once:
# its graded run is staged as the quick book's execution (tests/test_notebooks.py). The
# chapters go first, longest first, and the book last (tests/conftest.py orders them).
TEST_WORKERS ?= 2
test: $(STAMP)
	@$(MAKE) --no-print-directory browser || echo "make test: no Chromium, the browser tests will skip"
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# Headless Chromium for the browser check: Debian's package, installed by apt-get when missing
# (Playwright drives this system browser; it never downloads one of its own).
browser:
	@if command -v chromium >/dev/null 2>&1; then \
	  true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Debian's chromium for the browser check (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	    && chromium --version; \
	else \
	  echo "The browser check needs Chromium, which is not installed. Install Debian's" \
	    "package as root (apt-get install chromium), or set CHROMIUM=/path/to/chromium." >&2; \
	  exit 1; \
	fi

# The built book in a real browser, offline: every page of _toc.yml loads with no console
# error and no request leaving the machine, its maths is typeset, its figures load, its
# solutions start collapsed and open on a click; screenshots go to _build/screenshots/.
# Checks $(HTML_DIR) as it is: run `make book` (or `make quick-book`) first.
check-html: $(STAMP)
	@if [ -n "$$CHROMIUM" ]; then true; else $(MAKE) --no-print-directory browser; fi
	$(EDITION_ENV) $(BIN)/python tools/check_html.py $(HTML_DIR)

# Every notebook page as .ipynb, from the .md sources with jupytext (nothing is executed; the
# outputs of the last build in this mode are merged in from the execution cache):
# _build/notebooks/reader/NN_*.ipynb with solutions, _build/notebooks/student/NN_*.ipynb from
# `conserved.assignments release`. PUBLISH=1 commits both to the branch `notebooks`.
notebooks: $(STAMP)
	CONSERVED_MODE=$(MODE) $(EDITION_ENV) $(BIN)/python tools/notebooks.py \
	  $(if $(PUBLISH),--publish notebooks)

# The book as one PDF, offline: _build/pdf/conserved.pdf (EDITION=student:
# conserved-student.pdf). Jupyter Book's single-page HTML (through the execution cache: after
# `make book` nothing re-executes), printed by the browser check's Chromium once MathJax is done.
pdf: $(STAMP)
	@if [ -n "$$CHROMIUM" ]; then true; else $(MAKE) --no-print-directory browser; fi
	CONSERVED_MODE=$(MODE) $(EDITION_ENV) $(BIN)/python tools/pdf.py --edition $(EDITION)

# JupyterLab with the chapters: pinned JupyterLab and jupyterlab-myst in .venv (jupytext is
# already there), set to open .md files as notebooks (tools/lab-overrides.json).
$(LAB_STAMP): EXTRAS = '.[book,dev,lab]'
$(LAB_STAMP): $(STAMP) pyproject.toml requirements.lock tools/lab-overrides.json
	$(INSTALL)
	install -D -m 644 tools/lab-overrides.json $(LAB_SETTINGS)
	@touch $@

lab: $(LAB_STAMP)
	$(BIN)/jupyter lab --notebook-dir=. chapters/00_jax_primer.md

lint: $(STAMP)
	$(BIN)/ruff check lib tests chapters tools book/_ext
	$(BIN)/ruff format --check lib tests tools book/_ext

clean:
	rm -rf _build .pytest_cache .hypothesis

# Timings, outside the tests: each chapter's quick-mode time against its budget, then the
# library's per-step timings. Never fails on a slow machine (only on a chapter that fails).
bench: $(STAMP)
	$(BIN)/python tools/bench.py

# Paper mode in miniature (CI runs it): every chapter end to end with the papers' shapes and
# settings (CONSERVED_MODE=paper) but CONSERVED_MAX_STEPS=2 optimiser steps per training run, on
# the CPU. Claims that need a trained model are printed as skipped; any other error fails. Prints
# each chapter's time and memory (the largest compiled training step; the kernel's peak).
paper-smoke: $(STAMP)
	$(BIN)/python tools/paper_smoke.py
