# batchlab: two commands for a new user.
#   make lab    set up .venv and open JupyterLab on the chapters (as root too; ARGS="..." adds
#               JupyterLab options)
#   make test   set up .venv and run the whole test suite, notebooks included
#   make check  the fast tier while developing: lint and the tests not marked slow (< 1 min)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS := dev,dist,measure,browser,serve
LINTED := $(wildcard lib tests benchmarks scripts exercises conftest.py)

.PHONY: lab lab-scratch test check lint format exercises data bench clean setup notebooks

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt -e ".[$(EXTRAS)]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# JupyterLab refuses to start as root without --allow-root (containers, cloud notebooks): pass
# it when make runs as root. ARGS adds options of your own, e.g. make lab ARGS="--port 8890".
LAB_UID ?= $(shell id -u)
LAB_ROOT_ARGS := $(if $(filter 0,$(LAB_UID)),--allow-root)
ARGS ?=
lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB_ROOT_ARGS) $(ARGS) notebooks/00_start_here.ipynb

# JupyterLab saves a notebook (outputs included) while it runs; to work through the chapters
# without changing the committed ones, run copies: make lab-scratch copies the chapters into
# SCRATCH (outside the repository; copies already there are kept, delete them to start over)
# with a link to data/, and opens JupyterLab there.
SCRATCH ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/batchlab/chapters
lab-scratch: $(STAMP)
	mkdir -p "$(SCRATCH)/notebooks"
	cp -n notebooks/*.ipynb "$(SCRATCH)/notebooks/"
	ln -sfn "$(CURDIR)/data" "$(SCRATCH)/data"
	cd "$(SCRATCH)" && "$(CURDIR)/$(BIN)/jupyter" lab $(LAB_ROOT_ARGS) $(ARGS) notebooks/00_start_here.ipynb

# make test runs hypothesis derandomized (BATCHLAB_HYPOTHESIS_PROFILE=ci, tests/conftest.py):
# the same examples every run; make check explores new ones each time.
test: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	BATCHLAB_HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

# The fast tier runs on every core (pytest-xdist, JOBS=auto; JOBS=0 for one process) and keeps
# compiled test modules (pytest's rewritten asserts) under PYCACHE, outside the repository, even
# where PYTHONDONTWRITEBYTECODE is set: a second run skips the compile.
JOBS ?= auto
PYCACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/batchlab/pycache
check: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX="$(PYCACHE)" \
		$(BIN)/python -m pytest -m "not slow" -p no:cacheprovider -p no:nbval -q -n $(JOBS) tests

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

exercises: $(STAMP)
	$(BIN)/python scripts/make_exercises.py

# Re-execute the chapters in place (outputs are committed and compared by nbval). Widget state is
# not stored: plotly's FigureWidget would embed the 5 MB plotly.js in every notebook; nor are
# execution timestamps (old ones are cleared, cell tags kept): a re-run changes the stored
# outputs only where they must change.
NOTEBOOKS ?= $(sort $(wildcard notebooks/[0-9]*.ipynb))
notebooks: $(STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=900 --ExecutePreprocessor.kernel_name=python3 \
		--ExecutePreprocessor.store_widget_state=False --ExecutePreprocessor.record_timing=False \
		--ClearMetadataPreprocessor.enabled=True --ClearMetadataPreprocessor.clear_notebook_metadata=False \
		--ClearMetadataPreprocessor.preserve_cell_metadata_mask=tags $(NOTEBOOKS)

data: $(STAMP)
	$(BIN)/python scripts/make_data.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
