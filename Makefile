# Set-up, demo and tests. `make demo` and `make test` each create the virtual environment
# first if needed (about 3 minutes on a fresh machine), from the project's own files only.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.siteflow-installed

.PHONY: setup demo test

# The compiled kernels (siteflow._C) are built by `pip install -e .`: a change to csrc/ rebuilds.
CSRC := $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.inc csrc/*/*.cpp csrc/*/*.cu)

$(STAMP): requirements.txt pyproject.toml setup.py $(CSRC)
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PYTHON) train.py -c demo/sequential -n quick

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 -q
