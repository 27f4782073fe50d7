# lopt — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed.stamp
export JAX_PLATFORMS ?= cpu
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-slow bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Meta-train a learned optimizer on small MLP tasks, then evaluate it against tuned Adam.
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S_%N)

demo: $(STAMP)
	$(BIN)/lopt meta-train compute=cpu hydra.run.dir=$(DEMO_DIR)/meta-train
	$(BIN)/lopt evaluate learned_optimizer=$(DEMO_DIR)/meta-train budget=small hydra.run.dir=$(DEMO_DIR)/evaluate

## The test suite (slow tests excluded), 7-12 minutes on 2 cores (machines differ): two pytest-xdist workers,
## one test file per worker at a time (module fixtures stay in one process).
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q -n 2 --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(STAMP)
	$(BIN)/ruff check lopt_cli task_definitions tests benchmarks examples

clean:
	rm -rf $(VENV) outputs .pytest_cache
