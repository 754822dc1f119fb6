# Set-up, demo, tests and the documentation site. `make demo` and `make test` each create the
# virtual environment first if needed (about 4 minutes on a fresh machine), from the project's
# own files only.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.siteflow-installed
DOCS_STAMP := $(VENV)/.siteflow-docs-installed
PYTEST := OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 -q

.PHONY: setup docs-setup demo test test-all docs

# The compiled kernels (siteflow._C) are built by `pip install -e .`: a change to csrc/ rebuilds.
CSRC := $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.inc csrc/*/*.cpp csrc/*/*.cu)

$(STAMP): requirements.txt pyproject.toml setup.py $(CSRC)
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP) requirements-docs.txt
	$(PYTHON) -m pip install --quiet -r requirements-docs.txt
	touch $(DOCS_STAMP)

setup: $(STAMP)

docs-setup: $(DOCS_STAMP)

demo: $(STAMP)
	$(PYTHON) train.py -c demo/sequential -n quick

# The fast tier: everything but the end-to-end runs marked slow (a few minutes on 2 cores).
test: $(STAMP)
	$(PYTEST) -m "not slow and not docs"
	@echo "fast tier passed; 'make test-all' runs every test, the slow end-to-end runs and the documentation's commands too"

# Every test, the documentation site's strict build and its runnable commands included (what CI runs).
test-all: $(STAMP) $(DOCS_STAMP)
	$(PYTEST)

# The documentation site, into site/ (open site/index.html). Needs the docs extras: make docs-setup.
docs: $(STAMP)
	@$(PYTHON) -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null || \
		{ echo "make docs: the documentation tools are not installed; run 'make docs-setup' (pip install -r requirements-docs.txt into $(VENV))" >&2; exit 2; }
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict
	@echo "documentation site in site/ (open site/index.html)"
