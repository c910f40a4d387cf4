# Earmark: `make install` then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; any other torch requirement pulls gigabytes of CUDA packages.
TORCH ?= torch==2.13.0

.PHONY: install test serve bench clean

install: $(BIN)/earmark

$(BIN)/earmark: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/earmark

test: install
	EARMARK_OFFLINE=1 $(BIN)/python -m pytest -q

# The service on http://127.0.0.1:8000 with the embedded default model (base), offline.
serve: install
	EARMARK_OFFLINE=1 $(BIN)/earmark serve

bench: install
	$(BIN)/python bench/bench_core.py

clean:
	rm -rf $(VENV) build *.egg-info
