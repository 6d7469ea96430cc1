# Fresh machine: `make demo` (install + real weights + end-to-end demo) or `make test` (install + full test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install browser demo test bench device-bundle clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "setuptools>=70.1"  # builds the wheel offline in tests/e2e/test_wheel.py
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/refineloc-e2e weights fetch i3d-kinetics400-rgb
	$(BIN)/refineloc-e2e demo --out demo_out

# the results page's browser tests (tests/report/test_report_browser.py) run in the system's Chromium: installed here
# when missing and this is root with apt-get (CI); otherwise one line says how (REFINELOC_SKIP_BROWSER=1 deselects them)
browser:
	@if [ -n "$$REFINELOC_CHROMIUM" ] || [ "$$REFINELOC_SKIP_BROWSER" = 1 ] || command -v chromium >/dev/null 2>&1 \
		|| command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "make test: the browser tests need Chromium: sudo apt-get install chromium (or REFINELOC_SKIP_BROWSER=1)" >&2; fi

test: install browser
	$(BIN)/python -m pytest -q -ra

bench: install
	$(BIN)/python -m benchmarks.speed.extract_throughput

# The device check's bundle (docs/extracting.md "GPU device check"): the PyAV wheel for the GPU machine's Python (abi3 wheels serve
# 3.11+), the same version as this venv's; nothing else is needed there (torch, numpy, plain OpenCV are).
DEVICE_PY ?= 3.12
BUNDLE ?= device_bundle
BUNDLE_MAX_MB ?= 40
device-bundle: install
	rm -rf $(BUNDLE) && mkdir -p $(BUNDLE)
	$(BIN)/pip download --quiet --disable-pip-version-check --only-binary=:all: --python-version $(DEVICE_PY) \
		--platform manylinux_2_28_x86_64 --no-deps -d $(BUNDLE) \
		"av==$$($(BIN)/python -c 'import av; print(av.__version__)')"
	@mb=$$(du -m $(BUNDLE)/av-*.whl | cut -f1); ls -l $(BUNDLE); \
	if [ $$mb -ge $(BUNDLE_MAX_MB) ]; then \
		echo "$(BUNDLE)/: the av wheel is $$mb MiB, over $(BUNDLE_MAX_MB) MiB" >&2; exit 1; fi
	@echo "device command (run in the checkout root, carrying $(BUNDLE)): bash benchmarks/device/gpu_check.sh"

clean:
	rm -rf $(VENV) demo_out *.egg-info $(BUNDLE)
