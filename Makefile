# `make run`: set up and start the embedded stack.  `make test`: set up and run the tests,
# two test files at a time, but the suites of minutes.  `make chaos`: those — the multi-host
# deployment and the faults suite (ten rounds).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.styx-installed

.PHONY: run test chaos install bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/styx up --launch examples/hello.yaml -c dev

# The dashboard's browser tests drive Debian's chromium: installed here where we may (root with
# apt-get; bounded, best effort), else those tests skip saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || \
	  timeout 600 env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || true

test: $(STAMP) browser
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not long"

# The suites of minutes: the multi-host deployment, and ten rounds of kill -9 of each part
# (tests/chaos/).
chaos: $(STAMP)
	AWS_EC2_METADATA_DISABLED=true STYX_CHAOS_ROUNDS=$${STYX_CHAOS_ROUNDS:-10} $(BIN)/python -m pytest -q -s -rxX -m long

bench: $(STAMP)
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/exec_latency.py
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/throughput.py
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/deep_queue.py
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/scale.py
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/dashboard.py
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/serve.py
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python bench/managed_jobs.py --jobs 200 --slots 16

clean:
	rm -rf $(VENV) build *.egg-info
