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

# The main job: the default workflow (config.yaml) and its report. Without Debian's
# dataset-fashion-mnist (not root, no apt) it runs on sklearn digits and says so.
run: setup
	@if $(BIN)/python -c "from layernas.evaluate.sources import check_source; check_source('fashion-mnist', None)" 2>/dev/null; \
	  then extra=""; else echo "Fashion-MNIST is not installed: running on sklearn digits (config/digits.yaml)"; \
	  extra="--configfile config.yaml config/digits.yaml"; fi; \
	$(BIN)/snakemake --cores $(CORES) $$extra; rc=$$?; \
	  if [ -f results/search/summary.json ]; then $(BIN)/snakemake --cores 1 $$extra --report report.html \
	    && echo "report: report.html   status: . $(BIN)/activate && layernas status results"; fi; exit $$rc

# The whole suite, slow tests included (CI runs exactly this). pytest's exit 5 ("no tests
# collected") is turned into a failure so an empty run can never pass.
test: setup
	$(BIN)/ruff check layernas tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules/*.smk
	$(BIN)/snakemake --lint --configfile .test/config.yaml -d $$(mktemp -d)
	$(BIN)/pytest -q -p no:cacheprovider --durations=25; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests ran"; exit 1; fi; exit $$rc

test-quick: setup
	$(BIN)/pytest -q -m "not slow and not slurm"

lint: setup
	$(BIN)/ruff check layernas tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules/*.smk
	$(BIN)/snakemake --lint --configfile .test/config.yaml -d $$(mktemp -d)

clean:
	rm -rf results .snakemake report.html
