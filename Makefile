# Earmark: `make install` then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; any other torch requirement pulls gigabytes of CUDA packages.
TORCH ?= torch==2.13.0

.PHONY: install test-data test serve bench clean

install: $(BIN)/earmark

$(BIN)/earmark: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	# renders General MIDI music for the default corpus; its pyaudio dependency is only for playback
	$(BIN)/pip install --quiet --no-deps "tinysoundfont==0.3.7"
	touch $(BIN)/earmark

# The Debian packages of the small corpus slice the tests build (about 80 MB, once, into the user cache).
test-data: install
	$(BIN)/earmark data fetch --slice small

test: install test-data
	EARMARK_OFFLINE=1 $(BIN)/python -m pytest -q

# The service on http://127.0.0.1:8000 with the embedded default model (base), offline.
serve: install
	EARMARK_OFFLINE=1 $(BIN)/earmark serve

# Earmark against its peers in one run (bench/bench_suite.py). MODE=quick: a smoke run on the test
# fixtures (bench/results/); MODE=full: the numbers in docs/benchmarks.md, 5 interleaved runs.
MODE ?= quick
bench: install
	$(BIN)/python bench/bench_peers.py setup
	$(BIN)/python bench/bench_suite.py --mode $(MODE)

clean:
	rm -rf $(VENV) build *.egg-info
