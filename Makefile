# Fresh machine: `make demo` (install + real weights + end-to-end demo) or `make test` (install + full test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "setuptools>=70.1"  # builds the wheel offline in tests/test_wheel.py
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/refineloc-e2e weights fetch i3d-kinetics400-rgb
	$(BIN)/refineloc-e2e demo --out demo_out

test: install
	$(BIN)/python -m pytest -q -ra

bench: install
	$(BIN)/python benchmarks/extract_throughput.py

clean:
	rm -rf $(VENV) demo_out *.egg-info
