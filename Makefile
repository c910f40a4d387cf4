# Earmark: `make install` then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch comes from PyTorch's wheel index for TORCH_INDEX: the CPU build by default (PyPI's torch is
# the CUDA build, with gigabytes of NVIDIA packages). A CUDA build instead:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cu126
# The index is an extra one: the build it has (2.13.0+cpu, 2.13.0+cu126) sorts above PyPI's 2.13.0,
# and a local wheel of the same build that pip is configured to find is taken as well. torch's own
# dependencies come from PyPI with the project's.
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install test-data test serve bench clean lowest

install: $(BIN)/earmark

$(BIN)/earmark: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-deps "$(TORCH)" --extra-index-url "$(TORCH_INDEX)"
	$(BIN)/pip install --quiet -e ".[test]"
	# renders General MIDI music for the default corpus; its pyaudio dependency is only for playback
	$(BIN)/pip install --quiet --no-deps "tinysoundfont==0.3.7"
	touch $(BIN)/earmark

# The Debian packages of the small corpus slice the tests build (about 80 MB, once, into the user cache).
test-data: install
	@command -v apt-get >/dev/null && command -v dpkg >/dev/null && command -v dpkg-deb >/dev/null || \
	  { echo "make test needs apt-get, dpkg and dpkg-deb (Debian or Ubuntu): they fetch the Debian packages of the test corpus slice"; exit 1; }
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

# The lowest release pyproject.toml allows of every direct dependency (torch as in install) in
# .venv-lowest: they must install together, the package and the service must import, and the
# service's reliability tests must pass on them.
LOWEST := .venv-lowest
LOWEST_REQUIREMENTS := import tomllib, re; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
	print("\n".join(re.sub(r">=([^,]+).*", r"==\1", d) for d in deps if not d.startswith("torch")))
lowest:
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install --quiet --no-deps "$(TORCH)" --extra-index-url "$(TORCH_INDEX)"
	$(LOWEST)/bin/python -c '$(LOWEST_REQUIREMENTS)' > $(LOWEST)/requirements.txt
	$(LOWEST)/bin/pip install --quiet -r $(LOWEST)/requirements.txt
	$(LOWEST)/bin/pip install --quiet --no-deps -e .
	$(LOWEST)/bin/pip check
	EARMARK_OFFLINE=1 $(LOWEST)/bin/python -c 'import tagger, service.app, service.protocol, service.client; service.app.create_app(); print("the lowest allowed versions install and import")'
	$(LOWEST)/bin/pip install --quiet "pytest>=8" "pytest-timeout>=2.3"
	EARMARK_OFFLINE=1 $(LOWEST)/bin/python -m pytest -q -p no:cacheprovider tests/test_reliability.py

clean:
	rm -rf $(VENV) $(LOWEST) build *.egg-info
