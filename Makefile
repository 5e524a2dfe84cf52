# batchlab: two commands for a new user.
#   make lab   set up .venv and open JupyterLab on the chapters
#   make test  set up .venv and run the whole test suite, notebooks included
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS := dev,dist,measure,browser

.PHONY: lab test lint format exercises data bench clean setup

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
	$(BIN)/ruff check lib tests benchmarks scripts exercises
	$(BIN)/python -m pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check lib tests benchmarks scripts exercises
	$(BIN)/ruff format --check lib tests benchmarks scripts exercises

format: $(STAMP)
	$(BIN)/ruff format lib tests benchmarks scripts exercises
	$(BIN)/ruff check --fix lib tests benchmarks scripts exercises

exercises: $(STAMP)
	$(BIN)/python scripts/make_exercises.py

data: $(STAMP)
	$(BIN)/python scripts/make_data.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
