# make setup  - create .venv with everything (torch pinned, see requirements.txt)
# make test   - lint, format check and the test suite (CI runs this)
# make demo   - the whole path offline with tiny untrained networks (prepare -> invert -> train -> reenact);
#               G=... MAPPER=... [SOURCE=photo DRIVING=clip] reenacts with real files instead
# make generate - a grid of faces from seeds; G=path/or/known-name to use real weights
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/demo
SEEDS ?= 0-7

.PHONY: setup test demo generate clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

demo: setup
	$(PY) scripts/demo.py out=$(OUT) $(if $(G),network=$(G)) $(if $(MAPPER),mapper=$(MAPPER)) \
		$(if $(SOURCE),source=$(SOURCE)) $(if $(DRIVING),driving=$(DRIVING))

generate: setup
	$(PY) scripts/generate.py $(if $(G),network=$(G),network=random) seeds=$(SEEDS) out=out/generate

clean:
	rm -rf $(VENV) out
