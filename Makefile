# Two commands do all the set-up on a fresh machine (Python ≥ 3.11 and a Rust toolchain present):
#   make demo   build, then run the gateway in front of its built-in mock upstream (no API keys)
#   make test   build, then run every test: Rust unit tests and the pytest suite (it installs
#               redis-server and PostgreSQL with apt-get when missing: the tests start their own)
# Everything installs into .venv from PyPI and crates.io.

VENV    ?= .venv
PY      := $(VENV)/bin/python
PORT    ?= 8080
# The test suite's build: optimised but incremental, without the release profile's fat LTO
# (a one-file change rebuilds in seconds instead of minutes). Benchmarks use --release.
PROFILE ?= dev-opt

.PHONY: demo test build bench clean

$(VENV)/.deps: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.7,<2"
	touch $@

build: $(VENV)/.deps
	. $(VENV)/bin/activate && maturin develop -q --profile $(PROFILE) --extras test

demo: build
	$(VENV)/bin/llmgw demo --port $(PORT)

test: build
	scripts/system-deps.sh
	cargo test -q
	$(PY) -m pytest -q

bench: $(VENV)/.deps
	. $(VENV)/bin/activate && maturin develop -q --release --extras test
	$(PY) -m pytest -q benches --benchmark-only -p no:cacheprovider

clean:
	rm -rf $(VENV) target
