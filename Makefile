# Two commands on a fresh machine: `make demo` and `make test`.
# Every target bootstraps .venv first; a second run does not reinstall.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast test-gpu lint bench bench-overhead bench-scale mutate fuzz chaos bench-search install mlflow-ui cluster-up cluster-down clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,cluster]'
	@touch $(STAMP)

install: $(STAMP)

# Each demo is a new study (quickstart-YYYYmmdd-HHMMSS); the champion alias moves to the newest.
# `report` then draws its charts as PNGs (a headless Chromium, ~5 s) onto the study run,
# where the dashboard previews them as images.
demo: $(STAMP)
	name=quickstart-$$(date +%Y%m%d-%H%M%S) && \
	$(BIN)/resnet-search run configs/quickstart.toml --name $$name && \
	$(BIN)/resnet-search report $$name

# Two pytest-xdist workers, a file each at a time (the longest first: tests/conftest.py):
# on the 2-core CI machine much of a study test is waiting (Ray and trial start-up, outages,
# autoscaling), which the other worker fills. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q --timeout=900 --durations=25 -n $(TEST_WORKERS) --dist loadfile \
		--no-loadscope-reorder

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The CUDA and NCCL paths (tests marked gpu), on a machine with GPUs; elsewhere each is
# skipped with the reason (-rs prints it).
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -rs -m gpu --timeout=900

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/platform_overhead.py
	$(BIN)/python benchmarks/dashboard_startup.py

bench-overhead: $(STAMP)
	$(BIN)/python benchmarks/platform_overhead.py

# Each reading command at 1,000 and 10,000 trials on SQLite (~15 min on 2 cores). SCALE_ARGS:
# "--store postgresql" (the tests' server), "--real-study --trials 1000" (a real study, ~30 min).
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py $(SCALE_ARGS)

# Deliberate bugs, one at a time, in a scratch copy: each must make a named test fail on code
# where the same tests pass (tests/README.md).
mutate: $(STAMP)
	$(BIN)/python tests/mutate.py

# The fuzz tests with N cases each (CI runs 400): make fuzz N=5000
fuzz: $(STAMP)
	RESNET_SEARCH_FUZZ_EXAMPLES=$(or $(N),5000) $(BIN)/python -m pytest -q tests/search/cli/test_fuzz.py

# The chaos loop N times (default 5), each with a fresh seed: a study killed at 10 moments of
# its life (~7-10 min on 2 shared cores) and, every other run (the 1st, 3rd, ...), a worker
# node killed on a local cluster (~2-3 min). Replay one: RESNET_SEARCH_CHAOS_SEED=S make chaos N=1
chaos: $(STAMP)
	@for i in $$(seq 1 $(or $(N),5)); do \
	  seed=$${RESNET_SEARCH_CHAOS_SEED:-$$(od -An -N3 -tu4 /dev/urandom | tr -d ' ')}; \
	  nodes=$$([ $$((i % 2)) = 1 ] && echo tests/search/end_to_end/test_node_loss.py); \
	  echo "chaos run $$i: RESNET_SEARCH_CHAOS_SEED=$$seed"; \
	  RESNET_SEARCH_CHAOS_SEED=$$seed RESNET_SEARCH_CHAOS_FULL=1 $(BIN)/python -m pytest -q -s \
	    -p no:cacheprovider tests/search/end_to_end/test_chaos.py $$nodes \
	    || { echo "chaos run $$i failed: RESNET_SEARCH_CHAOS_SEED=$$seed"; exit 1; }; \
	done

# Random vs TPE, with and without ASHA, at one trial-epoch budget (~45 min on 2 cores).
bench-search: $(STAMP)
	$(BIN)/python benchmarks/search_efficiency.py

mlflow-ui: $(STAMP)
	$(BIN)/resnet-search ui

cluster-up: $(STAMP)
	cluster/local.sh up $(or $(N),2)

cluster-down:
	cluster/local.sh down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
