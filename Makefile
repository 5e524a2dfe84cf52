# batchlab: two commands for a new user.
#   make lab    set up .venv and open JupyterLab on the chapters
#   make test   set up .venv and run the whole test suite, notebooks included
#   make check  the fast tier while developing: lint and the tests not marked slow (< 1 min)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS := dev,dist,measure,browser,serve
LINTED := $(wildcard lib tests benchmarks scripts exercises conftest.py)

.PHONY: lab test check lint format exercises data bench clean setup notebooks

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt -e ".[$(EXTRAS)]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/00_start_here.ipynb

test: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/python -m pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

check: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/python -m pytest -m "not slow" -p no:cacheprovider -p no:nbval -q tests

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

exercises: $(STAMP)
	$(BIN)/python scripts/make_exercises.py

# Re-execute the chapters in place (outputs are committed and compared by nbval). Widget state is
# not stored: plotly's FigureWidget would embed the 5 MB plotly.js in every notebook.
NOTEBOOKS ?= $(sort $(wildcard notebooks/[0-9]*.ipynb))
notebooks: $(STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=900 --ExecutePreprocessor.kernel_name=python3 \
		--ExecutePreprocessor.store_widget_state=False $(NOTEBOOKS)

data: $(STAMP)
	$(BIN)/python scripts/make_data.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
