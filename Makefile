# `make run`: set up and start the embedded stack.  `make test`: set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.styx-installed

.PHONY: run test install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/styx up --launch examples/hello.yaml -c dev

test: $(STAMP)
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/exec_latency.py

clean:
	rm -rf $(VENV) build *.egg-info
