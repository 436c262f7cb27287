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
SANITY_ROOT := $(BUILD)/sanity/ansible_collections/smarthost/postfix
SCENARIOS   ?= default routes reliability fleet
# The ansible-core releases meta/runtime.yml claims: sanity and unit tests run
# under each, from a small virtualenv per core in .build/cores/<core>/, created
# once and reused (rm -rf it to start over). CORES=2.16 make sanity runs one.
CORES       ?= 2.16 2.17 2.18 2.19
CORE_VENVS  := $(BUILD)/cores
CORE_VENV_STAMPS := $(foreach core,$(CORES),$(CORE_VENVS)/$(core)/.installed)
SANITY_TESTS := pylint yamllint validate-modules ansible-doc import pep8 changelog runtime-metadata

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
.PHONY: test lint sanity unit molecule adopter core-venvs
# The base images and the per-core virtualenvs are mostly downloads and package
# installs, so they are made in the background: the virtualenvs while lint runs,
# the images while lint, sanity and the unit tests run. Each one's output goes to
# its log in .build/, shown when it fails. A failure anywhere fails the run, and
# the molecule scenarios start only once everything before them has passed.
test: setup
	@mkdir -p $(BUILD)
	@echo "==> base images and core virtualenvs in the background (logs: $(BUILD)/images.log, core-venvs.log)"
	@$(MAKE) --no-print-directory images > $(BUILD)/images.log 2>&1 & images=$$!; \
	  $(MAKE) --no-print-directory core-venvs > $(BUILD)/core-venvs.log 2>&1 & venvs=$$!; \
	  finished() { \
	    if wait $$1; then echo "==> $$2: done"; \
	    else cat $(BUILD)/$$2.log; echo "FAILED: make $$2 (log: $(BUILD)/$$2.log)"; return 1; fi; }; \
	  lint=0; $(MAKE) --no-print-directory lint || lint=$$?; \
	  finished $$venvs core-venvs || { wait $$images; exit 1; }; \
	  checks=$$lint; [ $$checks -ne 0 ] || $(MAKE) --no-print-directory sanity unit || checks=$$?; \
	  finished $$images images || exit 1; \
	  exit $$checks
	@$(MAKE) --no-print-directory molecule adopter

core-venvs: $(CORE_VENV_STAMPS)

lint: setup
	@echo "==> ruff: the house style (ruff.toml)"
	@$(BIN)/ruff format --check --quiet .
	@$(BIN)/ruff check --quiet .
	@echo "==> ansible-lint (production profile)"
	@$(BIN)/ansible-lint --profile production -q
	@$(BIN)/yamllint -s molecule/*/molecule.yml
	@echo "==> changelog fragments"
	@$(BIN)/antsibull-changelog lint
	@echo "==> generated docs up to date, links and cause names consistent"
	@$(BIN)/python scripts/gen-docs.py --check

# ansible-core of that release, the sanity requirements its own ansible-test
# pins, and what the unit tests import besides the standard library.
$(CORE_VENVS)/%/.installed:
	@echo "==> ansible-core $* virtualenv"
	@python3 -m venv $(@D)
	@$(@D)/bin/pip install -q -U pip
	@$(@D)/bin/pip install -q "ansible-core==$*.*"
	@reqs=$$(echo $(@D)/lib/python3*/site-packages/ansible_test/_data/requirements); \
	  $(@D)/bin/pip install -q pytest aiosmtpd $(foreach t,$(SANITY_TESTS),-r $$reqs/sanity.$(t).txt)
	@touch $@

# ansible-test wants the collection at ansible_collections/smarthost/postfix and
# fetches get-pip.py from the internet for its own virtualenvs; it gets a copy
# of the tracked tree and an offline stand-in for get-pip. Each core reads its
# own tests/sanity/ignore-<core>.txt.
sanity: setup $(CORE_VENV_STAMPS)
	@rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	@git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t $(SANITY_ROOT)
	@# ansible-test lists files through git; inside this repo it would see .build/ as ignored.
	@cd $(SANITY_ROOT) && git init -q && git add -A
	@mkdir -p ~/.ansible/test/cache
	@for core in $(CORES); do \
	  echo "==> ansible-test sanity, ansible-core $$core"; \
	  venv=$(CORE_VENVS)/$$core; \
	  pip_version=$$(grep -oP "pip='\K[0-9.]+" \
	    $$venv/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1); \
	  cp scripts/ansible-test-get-pip.py ~/.ansible/test/cache/get_pip_$${pip_version//./_}.py; \
	  rm -rf $(SANITY_ROOT)/tests/output; \
	  (cd $(SANITY_ROOT) && $$venv/bin/ansible-test sanity --python 3.11 --color no 2>&1) \
	    | grep -v -E "^(Collecting|Downloading|Installing|Successfully|Requirement|Processing|Looking in)" \
	    | grep -v -E "^(Using cached pip|WARNING: Location|  Downloading|     )" \
	    || exit 1; \
	done

# The whole suite under the core of .venv; under the other cores the plugins'
# and the playbooks' tests (modules through main(), the filter, module_utils, the
# site playbook's decisions), not the emulator's.
unit: setup $(CORE_VENV_STAMPS)
	@main=$$($(BIN)/python -c 'import ansible.release as r; print(".".join(r.__version__.split(".")[:2]))'); \
	  echo "==> unit tests (real postconf/postmap on throwaway config directories), ansible-core $$main"; \
	  $(BIN)/pytest -q -p no:cacheprovider tests/unit; \
	  for core in $(CORES); do \
	    [ "$$core" = "$$main" ] && continue; \
	    echo "==> unit tests of the plugins, ansible-core $$core"; \
	    $(CORE_VENVS)/$$core/bin/pytest -q -p no:cacheprovider tests/unit/plugins tests/unit/playbooks || exit 1; \
	  done

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
