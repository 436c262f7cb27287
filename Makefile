# smarthost.postfix — one entry point for everything.
#
#   make test        everything CI runs: lint, sanity, unit tests, molecule scenarios, adopter test
#   make demo        a demo fleet in containers relaying through the provider emulator
#   make demo-clean  remove the demo fleet
#   make bench       benchmarks, written to docs/performance.md
#
# `make test` sets up what it needs from nothing on a fresh Debian machine as
# root: system packages, the Docker engine, a virtualenv, the base images.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := $(CURDIR)/.venv
BIN         := $(VENV)/bin
BUILD       := $(CURDIR)/.build
COLLECTIONS := $(BUILD)/collections
SANITY_VENV := $(BUILD)/sanity-venv
SANITY_ROOT := $(BUILD)/sanity/ansible_collections/smarthost/postfix
ANSIBLE_TEST_REQS := $(VENV)/lib/python3*/site-packages/ansible_test/_data/requirements
SCENARIOS   ?= default routes reliability

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PYTHONPATH := $(COLLECTIONS)
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0

.PHONY: help
help:
	@sed -n 's/^#   //p' Makefile

# ---------------------------------------------------------------- setup
.PHONY: setup host venv collection-link images
setup: host venv collection-link

host:
	@bash scripts/host-setup.sh

venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt
	@echo "==> virtualenv $(VENV)"
	@python3 -m venv $(VENV)
	@$(BIN)/pip install -q -U pip wheel
	@$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@

# The collection must sit under ansible_collections/<namespace>/<name> to be
# importable; a symlink to the working tree keeps edits live.
collection-link:
	@mkdir -p $(COLLECTIONS)/ansible_collections/smarthost
	@ln -sfn ../../../.. $(COLLECTIONS)/ansible_collections/smarthost/postfix

images: host
	@bash images/build.sh 12 13
	@bash tests/emulator/build.sh

# ---------------------------------------------------------------- checks
.PHONY: test lint sanity unit molecule adopter
test: setup lint sanity unit molecule adopter

lint: setup
	@echo "==> ansible-lint (production profile)"
	@$(BIN)/ansible-lint --profile production -q
	@echo "==> changelog fragments"
	@$(BIN)/antsibull-changelog lint
	@echo "==> generated docs up to date, links and cause names consistent"
	@$(BIN)/python scripts/gen-docs.py --check

$(SANITY_VENV)/.installed: requirements-dev.txt
	@echo "==> sanity virtualenv"
	@python3 -m venv $(SANITY_VENV)
	@$(SANITY_VENV)/bin/pip install -q "$$($(BIN)/pip freeze | grep -i '^ansible-core==')" \
	    $(foreach t,pylint yamllint validate-modules ansible-doc import pep8 changelog runtime-metadata,-r $(wildcard $(ANSIBLE_TEST_REQS))/sanity.$(t).txt)
	@touch $@

# ansible-test wants the collection at ansible_collections/smarthost/postfix and
# fetches get-pip.py from the internet for its own virtualenvs; it gets a copy
# of the tracked tree and an offline stand-in for get-pip.
sanity: setup $(SANITY_VENV)/.installed
	@echo "==> ansible-test sanity"
	@rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	@git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t $(SANITY_ROOT)
	@# ansible-test lists files through git; inside this repo it would see .build/ as ignored.
	@cd $(SANITY_ROOT) && git init -q && git add -A
	@pip_version=$$(grep -oP "pip='\K[0-9.]+" $(wildcard $(VENV)/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)); \
	  mkdir -p ~/.ansible/test/cache; \
	  cp scripts/ansible-test-get-pip.py ~/.ansible/test/cache/get_pip_$${pip_version//./_}.py
	@cd $(SANITY_ROOT) && $(SANITY_VENV)/bin/ansible-test sanity --python 3.11 --color no 2>&1 \
	  | grep -v -E "^(Collecting|Downloading|Installing|Successfully|Requirement|WARNING: Location|  Downloading|     )" || exit 1

unit: setup
	@echo "==> unit tests (real postconf/postmap on throwaway config directories)"
	@$(BIN)/pytest -q -p no:cacheprovider tests/unit

molecule: setup images
	@echo "==> molecule scenarios: $(SCENARIOS)"
	@for s in $(SCENARIOS); do $(BIN)/molecule test -s $$s || exit 1; done
	@# Rocky 9 runs wherever its base image can be pulled; elsewhere say so plainly.
	@set +e; reason=$$(bash images/rocky.sh); rc=$$?; set -e; \
	  if [ $$rc -eq 0 ]; then $(BIN)/molecule test -s rocky9; \
	  elif [ $$rc -eq 3 ]; then echo "SKIPPED molecule scenario rocky9: $$reason"; \
	  else echo "$$reason"; exit $$rc; fi

# ---------------------------------------------------------------- demo
.PHONY: demo demo-clean
demo: setup images
	@bash demo/run.sh

demo-clean:
	@bash demo/clean.sh

# ---------------------------------------------------------------- benchmarks
.PHONY: bench
bench: setup images
	@bash benchmarks/run.sh

# What an adopter does: Galaxy tarball into an infra repo of its own.
adopter: setup images
	@echo "==> adopter test: build, install into a separate infra repo, converge"
	@bash tests/integration/adopter.sh

# ---------------------------------------------------------------- packaging
.PHONY: build
build: setup
	@mkdir -p $(BUILD)/dist
	@$(BIN)/ansible-galaxy collection build --force --output-path $(BUILD)/dist .
