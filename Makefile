# Two entry points (see README): `make run` and `make test`. Both set up everything first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: setup run test test-quick lint bench clean

$(BIN)/layernas: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/layernas
	@bash scripts/install_data.sh || true

# The main job: the default LayerNAS search (see README "What `make run` does").
run: setup
	$(BIN)/layernas search --space mobilenet-tiny --oracle layernas.examples.toy:separable \
	  --target-min 3.0e6 --target-max 3.3e6 -H 20 -K 2 -R 3 --out results/demo

# The whole suite, slow tests included (CI runs exactly this). pytest's exit 5 ("no tests
# collected") is turned into a failure so an empty run can never pass.
test: setup
	$(BIN)/ruff check layernas tests benchmarks
	$(BIN)/snakemake --lint --configfile .test/config.yaml -d $$(mktemp -d)
	$(BIN)/pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests ran"; exit 1; fi; exit $$rc

test-quick: setup
	$(BIN)/pytest -q -m "not slow and not slurm"

lint: setup
	$(BIN)/ruff check layernas tests benchmarks
	$(BIN)/snakemake --lint --configfile .test/config.yaml -d $$(mktemp -d)

clean:
	rm -rf results .snakemake report.html
