# Two commands: `make demo` and `make test`. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeds-installed
EXTRAS := dev,openvino,litert,llm
SYSTEM_PACKAGES := openssh-server mosquitto docker-registry systemd

.PHONY: demo test test-fast lint typecheck layers checks system-deps venv clean bench toolchains

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing edgeds[$(EXTRAS)] into $(VENV)"
	@$(BIN)/python -m pip install -q --disable-pip-version-check -U pip 2>&1 | grep -v "^WARNING: Location" || true
	@set -o pipefail; $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $@

# sshd and mosquitto back the simulated devices and the broker in tests, docker-registry (CNCF
# distribution) the OCI registry; systemd-analyze checks the agent's unit file (Debian packages;
# nothing here starts systemd, and the packages' own services are disabled).
system-deps:
	@missing=""; \
	test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || missing="$$missing mosquitto"; \
	command -v docker-registry >/dev/null 2>&1 || missing="$$missing docker-registry"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  $$SUDO systemctl disable --now ssh mosquitto docker-registry >/dev/null 2>&1 || true; \
	fi

lint: venv
	$(BIN)/ruff check edgeds tests bench
	$(BIN)/ruff format --check edgeds tests bench

typecheck: venv
	$(BIN)/mypy

# The layer order of docs/architecture.md (import-linter contracts in pyproject.toml).
layers: venv
	$(BIN)/lint-imports --no-cache

checks: lint typecheck layers

test: venv system-deps toolchains checks
	$(BIN)/python -m pytest -q --durations=15

# The same checks and every test not marked slow (see pyproject's markers), for the edit-test loop.
test-fast: venv system-deps checks
	$(BIN)/python -m pytest -q --durations=15 -m "not slow"

demo: venv system-deps
	$(BIN)/edgeds toolchain install llm
	$(BIN)/python -m edgeds.demo

# The compile toolchains, each in its own pinned venv under the cache dir, a no-op once installed:
# LiteRT (onnx2tf + TensorFlow, ~1.5 min the first time) and the LM exporters (torch CPU,
# optimum-intel, NNCF, onnxruntime-genai's builder, ~2 min the first time).
toolchains: venv
	$(BIN)/edgeds toolchain install litert
	$(BIN)/edgeds toolchain install llm

bench: venv
	$(BIN)/python bench/compile_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
