# Build and test entry points for the qsafe.keyfabric Ansible collection.
#
# Every target sets up what it needs from nothing on a fresh machine of the project's kind
# (Debian bookworm, Python 3.11, network limited to PyPI / Debian / npm):
#   make test          everything CI runs (sanity units sim-tests integration molecule changelog-lint build)
#   make help          the list of targets
#
# Offline notes (see also tools/make_get_pip.py):
#   * ansible-test sanity --venv bootstraps pip into each of its virtualenvs with a get-pip script it
#     downloads from a host that is not reachable here. tools/make_get_pip.py puts a stand-in
#     ~/.ansible/test/cache/get_pip_<ver>.py (built from the pip wheel on PyPI) where ansible-test
#     looks first; the sanity tools themselves (pylint, yamllint, ...) then install from PyPI.
#   * ansible-test units runs with --local in .venv (requirements.txt carries its requirements:
#     mock, pytest-mock, pytest-xdist), so the collection's own dependencies are there too.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory
.SUFFIXES:
.DELETE_ON_ERROR:

# Interpreter the venv is made from (ansible-core 2.19 needs 3.11-3.13 on the controller).
PYTHON ?= python3
PYVER := 3.11

VENV := $(CURDIR)/.venv
VBIN := $(VENV)/bin
VPY := $(VBIN)/python
VENV_STAMP := $(VENV)/.requirements.stamp

BUILD := $(CURDIR)/.build
COLL := $(BUILD)/ansible_collections/qsafe/keyfabric
DIST := $(BUILD)/dist
LOGS := $(BUILD)/logs
STATUS := $(BUILD)/status
NETCOLL := $(BUILD)/network_collections

# ansible-test sanity tests not run:
#   pslint - PowerShell linting needs pwsh + PSScriptAnalyzer; neither is in Debian's archive nor on
#            PyPI (this collection has no PowerShell anyway).
SANITY_SKIP := pslint
SANITY_ARGS ?=
UNITS_ARGS ?=
PYTEST_ARGS ?=
TEST_STEPS := sanity units sim-tests integration floor molecule changelog-lint build

# ~/.ansible (ansible-test's cache and sanity venvs, ansible's tmp) must be writable; fall back to a
# home inside the build tree when HOME is unset or read-only (e.g. a locked-down CI user).
ifeq ($(shell test -n "$$HOME" && mkdir -p "$$HOME/.ansible" 2>/dev/null && test -w "$$HOME/.ansible" && echo ok),)
export HOME := $(BUILD)/home
$(shell mkdir -p "$(BUILD)/home")
endif

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONDONTWRITEBYTECODE := 1
export ANSIBLE_LOCALHOST_WARNING := False
export ANSIBLE_INVENTORY_UNPARSED_WARNING := False

# Targets that run the project's tools see the venv first on PATH (so python3.11, ansible-playbook,
# ansible-test resolve to .venv rather than to pyenv's shims).
sanity units sim-tests integration molecule changelog-lint build demo bench testbed testbed-down: export PATH := $(VBIN):$(PATH)
# ansible-test finds its content root by walking up from the working directory and would take the
# repository's .git (where .build/ is ignored, so it would see no files): name the copy explicitly.
sanity units: export ANSIBLE_TEST_CONTENT_ROOT := $(COLL)
# ansible-playbook's interpreter discovery finds a pyenv shim that fails: pin the venv's python.
# REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE are deliberately left as the environment sets them.
integration demo bench testbed testbed-down: export ANSIBLE_PYTHON_INTERPRETER := $(VPY)
integration demo bench: export ANSIBLE_COLLECTIONS_PATH := $(BUILD):$(NETCOLL)

# apt-get install that runs 'apt-get update' only when the first attempt fails.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o=Dpkg::Use-Pty=0
define apt_install
{ $(APT_GET) install --no-install-recommends $(1) >/dev/null 2>&1 || \
  { $(APT_GET) update >/dev/null && $(APT_GET) install --no-install-recommends $(1) >/dev/null; }; }
endef

# $(call run_pytest,DIR,STEP): pytest DIR from the repo root; skip (with a note) only while DIR holds
# no test files; pytest's exit 5 (nothing collected) is reported but is not a failure by itself.
define run_pytest
if ! find $(1) -type f \( -name 'test_*.py' -o -name '*_test.py' \) 2>/dev/null | grep -q .; then \
  echo "$(2): NOTE: no test files under $(1)/ yet - skipped"; mkdir -p $(STATUS); touch $(STATUS)/$(2).skipped; exit 0; \
fi; \
rc=0; $(VPY) -m pytest $(1) -q $(PYTEST_ARGS) || rc=$$?; \
if [ $$rc -eq 5 ]; then echo "$(2): WARNING: pytest collected no tests under $(1)/ (exit 5)"; rc=0; fi; \
exit $$rc
endef

.PHONY: help venv .venv requirements-freeze collection ansible-test-cache shellcheck-tool integration-packages sanity units testbed testbed-down \
	sim-tests integration network-collections molecule changelog-lint build test demo bench clean distclean

help:
	@echo "make test            sanity + units + sim-tests + integration + floor + molecule + changelog-lint + build, one summary line"
	@echo "make sanity          ansible-test sanity --venv --python $(PYVER) on .build/ansible_collections/qsafe/keyfabric"
	@echo "make units           ansible-test units --local --python $(PYVER) (tests/unit)"
	@echo "make sim-tests       pytest tests/qkdsim"
	@echo "make integration     pytest tests/integration with ANSIBLE_COLLECTIONS_PATH=.build:.build/network_collections"
	@echo "make network-collections   cisco.ios, junipernetworks.junos (+ dependencies) from the pinned ansible wheel"
	@echo "make floor           tests/floor + the compat unit test on the oldest supported ansible-core (.build/floor-venv)"
	@echo "make molecule        molecule test of each role's scenario (roles/*/molecule/default: render, idempotence, verify)"
	@echo "make changelog-lint  antsibull-changelog lint"
	@echo "make build           ansible-galaxy collection build into .build/dist + tarball check"
	@echo "make demo | bench    tools/demo.sh | benchmarks/bench_*.py (BENCH=script, BENCH_ARGS=options; docs/benchmarks.md)"
	@echo "make testbed         live testbed (root): TESTBED_SITES (5) sites with real charons, keyed, every tunnel verified"
	@echo "make testbed-down    remove the testbed (namespaces, charons, qkdsim, state directory)"
	@echo "make venv            .venv from requirements.txt, with qkdsim and testbed installed from pyproject.toml (editable)"
	@echo "make collection      sync the collection copy under .build/"
	@echo "make requirements-freeze   regenerate requirements.txt from requirements-direct.txt"
	@echo "make clean | distclean     remove build output | and .venv"

# ---------------------------------------------------------------------------------------------
# .venv

venv .venv: $(VENV_STAMP)

# sslpsk3 (TLS-PSK for Cisco SKIP) is an sdist on PyPI: pip builds it with a C compiler against libssl.
VENV_BUILD_DEBS := gcc libssl-dev

$(VENV_STAMP): requirements.txt pyproject.toml
	@if ! "$(VPY)" -c 'import sys' >/dev/null 2>&1; then \
	  $(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v < (3, 14) else "$(PYTHON) is Python %d.%d; ansible-core 2.19 needs 3.11-3.13 (set PYTHON=...)" % v)'; \
	  echo "venv: creating .venv with $$($(PYTHON) -c 'import sys; print(sys.executable, sys.version.split()[0])')"; \
	  rm -rf "$(VENV)"; $(PYTHON) -m venv "$(VENV)"; \
	fi
	@missing=""; for pkg in $(VENV_BUILD_DEBS); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "venv: installing$$missing (apt; sslpsk3 builds from source)"; $(call apt_install,$$missing); fi
	@echo "venv: pip install -r requirements.txt"
	@"$(VPY)" -m pip install -q -r requirements.txt 2>&1 | { grep -v "^WARNING: Location 'file:///[^']*' is ignored" || true; }
	@echo "venv: pip install --no-deps -e . (qkdsim, testbed: pyproject.toml)"
	@"$(VPY)" -m pip install -q --no-deps -e . 2>&1 | { grep -v "^WARNING: Location 'file:///[^']*' is ignored" || true; }
	@touch "$@"

requirements-freeze:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q -r requirements-direct.txt 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; \
	{ echo "# Pinned dependencies of the project venv (.venv), direct and transitive."; \
	  echo "# Generated by 'make requirements-freeze' from requirements-direct.txt on Python $$("$$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())'); edit that file instead."; \
	  "$$tmp/venv/bin/python" -m pip freeze --exclude-editable | LC_ALL=C sort -f; } > requirements.txt
	@echo "requirements.txt: $$(grep -c '==' requirements.txt) pins"

# ---------------------------------------------------------------------------------------------
# collection copy for ansible-test (a real copy: ansible-test refuses a symlinked collection root)

collection:
	@mkdir -p "$(COLL)"
	@if command -v rsync >/dev/null 2>&1; then \
	  rsync -a --delete --exclude-from=tools/sync-excludes.txt "$(CURDIR)/" "$(COLL)/"; \
	else \
	  $(PYTHON) tools/sync_tree.py --exclude-from tools/sync-excludes.txt "$(CURDIR)" "$(COLL)" >/dev/null; \
	fi

# Offline stand-in for the get-pip script ansible-test downloads (no-op when already in place).
ansible-test-cache: $(VENV_STAMP)
	@"$(VPY)" tools/make_get_pip.py >/dev/null

# shellcheck is a Debian package: install it so ansible-test's shellcheck test runs instead of being
# skipped. Failure to install is loud but not fatal (ansible-test then skips that one test).
shellcheck-tool:
	@command -v shellcheck >/dev/null 2>&1 || { echo "sanity: installing shellcheck (apt)"; $(call apt_install,shellcheck); } || \
	  echo "sanity: WARNING: shellcheck could not be installed; ansible-test will skip its shellcheck test"

# ---------------------------------------------------------------------------------------------
# tests

sanity: $(VENV_STAMP) collection ansible-test-cache shellcheck-tool
	@cd "$(COLL)" && "$(CURDIR)/tools/run_logged.sh" "$(LOGS)/sanity.log" \
	  '^(Running sanity test|WARNING|ERROR|FATAL)' \
	  ansible-test sanity --venv --python $(PYVER) --color no $(addprefix --skip-test ,$(SANITY_SKIP)) $(SANITY_ARGS)
	@echo "sanity: passed (log: .build/logs/sanity.log)"

units: $(VENV_STAMP) collection
	@if ! find tests/unit -type f -name 'test_*.py' 2>/dev/null | grep -q .; then \
	  echo "units: NOTE: no unit tests (tests/unit/**/test_*.py) yet - skipped"; mkdir -p $(STATUS); touch $(STATUS)/units.skipped; exit 0; \
	fi; \
	cd "$(COLL)" && ansible-test units --local --python $(PYVER) --color no $(UNITS_ARGS)

sim-tests: $(VENV_STAMP)
	@$(call run_pytest,tests/qkdsim,sim-tests)

# Real daemons and parsers the integration tests drive: strongSwan's charon and swanctl (the
# strongswan_site role's configs are loaded into a real charon), wpa_supplicant (checks MACsec MKA files),
# iproute2 (the testbed's network namespaces, veth pairs and bridge).
INTEGRATION_DEBS := strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins wpasupplicant iproute2
integration-packages:
	@missing=""; for pkg in $(INTEGRATION_DEBS); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "integration: installing$$missing (apt)"; $(call apt_install,$$missing); fi

# The standard network collections push mode sends configurations through (cisco.ios,
# junipernetworks.junos and the collections they declare: ansible.netcommon, ansible.utils), for the
# integration tests. Galaxy is not reachable: they come out of the `ansible` wheel on PyPI pinned with
# its hash in tools/network_collections.txt, which is never installed (tools/network_collections.py;
# the wheel is kept in $(BUILD)/cache, so a rerun downloads nothing).
NETWORK_COLLECTIONS := cisco.ios junipernetworks.junos ansible.netcommon ansible.utils
network-collections: $(NETCOLL)/.installed.json

$(NETCOLL)/.installed.json: tools/network_collections.txt tools/network_collections.py $(VENV_STAMP)
	@"$(VPY)" tools/network_collections.py --requirement tools/network_collections.txt --cache "$(BUILD)/cache" \
	  --dest "$(NETCOLL)" $(NETWORK_COLLECTIONS)
	@touch "$@"

integration: $(VENV_STAMP) collection integration-packages network-collections
	@$(call run_pytest,tests/integration,integration)

# The floor: the oldest ansible-core that meta/runtime.yml and the roles' min_ansible_version claim, in a
# virtualenv of its own (.build/floor-venv, fully pinned by tests/floor/requirements.txt; rebuilt when that
# file changes, from pip's cache after the first time), with the collection copy in .build: tests/floor runs
# the render path there (playbooks/full_mesh.yml against qkdsim; a rerun changes nothing; the per-site path
# agrees), and plugin_utils/_ansible_compat's unit test runs on that core too.
FLOOR_REQUIREMENTS := tests/floor/requirements.txt
FLOOR_VENV := $(BUILD)/floor-venv
FLOOR_PY := $(FLOOR_VENV)/bin/python
FLOOR_STAMP := $(FLOOR_VENV)/.requirements.stamp
FLOOR_TESTS := tests/floor tests/unit/plugins/plugin_utils/test_ansible_compat.py

$(FLOOR_STAMP): $(FLOOR_REQUIREMENTS)
	@if ! "$(FLOOR_PY)" -c 'import sys' >/dev/null 2>&1; then \
	  $(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v < (3, 13) else "$(PYTHON) is Python %d.%d; ansible-core 2.16 needs 3.10-3.12 (set PYTHON=...)" % v)'; \
	  echo "floor: creating .build/floor-venv with $$($(PYTHON) -c 'import sys; print(sys.executable, sys.version.split()[0])')"; \
	  rm -rf "$(FLOOR_VENV)"; $(PYTHON) -m venv "$(FLOOR_VENV)"; \
	fi
	@missing=""; for pkg in $(VENV_BUILD_DEBS); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "floor: installing$$missing (apt; sslpsk3 builds from source)"; $(call apt_install,$$missing); fi
	@echo "floor: pip install -r $(FLOOR_REQUIREMENTS)"
	@"$(FLOOR_PY)" -m pip install -q -r $(FLOOR_REQUIREMENTS) 2>&1 | { grep -v "^WARNING: Location 'file:///[^']*' is ignored" || true; }
	@touch "$@"

.PHONY: floor
floor: export ANSIBLE_COLLECTIONS_PATH := $(BUILD)
# tests/floor and the unit test import the collection copy (ansible_collections.qsafe.keyfabric) from .build.
floor: export PYTHONPATH := $(BUILD)
floor: $(FLOOR_STAMP) collection
	@echo "floor: $$("$(FLOOR_PY)" -c 'from ansible.release import __version__; print("ansible-core", __version__)') on Python $$("$(FLOOR_PY)" -c 'import platform; print(platform.python_version())')"
	@"$(FLOOR_PY)" -m pytest $(FLOOR_TESTS) -q $(PYTEST_ARGS)

# One molecule scenario per role (roles/<role>/molecule/default; default driver, the sites are hosts on
# the controller): render mode - converge, idempotence (a second converge changes nothing), verify.
# molecule.yml turns off molecule's prerun and dependency steps, so nothing is downloaded; the roles
# come from the collection copy. MOLECULE_JOBS scenarios run at a time, each from nothing: its state
# and rendered files in $(BUILD)/molecule/<role>, its whole output in $(LOGS)/molecule-<role>.log
# (shown on failure).
MOLECULE_JOBS ?= 2
MOLECULE_ARGS ?=
molecule: export ANSIBLE_COLLECTIONS_PATH := $(BUILD)
molecule: export ANSIBLE_PYTHON_INTERPRETER := $(VPY)
molecule: export NO_COLOR := 1
molecule: $(VENV_STAMP) collection
	@ls -d roles/*/molecule/default | cut -d/ -f2 | xargs -P $(MOLECULE_JOBS) -I{} bash -c ' \
	  s0=$$(date +%s); rm -rf "$(BUILD)/molecule/{}"; \
	  if cd roles/{} && MOLECULE_EPHEMERAL_DIRECTORY="$(BUILD)/molecule/{}" "$(CURDIR)/tools/run_logged.sh" \
	       "$(LOGS)/molecule-{}.log" "^(WARNING|ERROR|CRITICAL) " molecule test --scenario-name default $(MOLECULE_ARGS); \
	  then echo "molecule: {} passed ($$(( $$(date +%s) - s0 ))s)"; \
	  else echo "molecule: {} FAILED (log: $(LOGS)/molecule-{}.log)" >&2; exit 1; fi' \
	  || { echo "molecule: FAILED" >&2; exit 1; }

changelog-lint: $(VENV_STAMP)
	@antsibull-changelog lint
	@echo "changelog-lint: passed"

build: $(VENV_STAMP)
	@rm -rf "$(DIST)"; mkdir -p "$(DIST)"
	@"$(CURDIR)/tools/run_logged.sh" "$(LOGS)/build.log" '^(Created|\[WARNING\]|ERROR)' \
	  ansible-galaxy collection build --force --output-path "$(DIST)" "$(CURDIR)"
	@"$(VPY)" tools/check_tarball.py "$$(ls "$(DIST)"/qsafe-keyfabric-*.tar.gz)"

test: $(VENV_STAMP) collection
	@rm -rf "$(STATUS)"; mkdir -p "$(STATUS)"; \
	failed=0; summary=""; t0=$$(date +%s); \
	for step in $(TEST_STEPS); do \
	  echo "===== make $$step ====="; s0=$$(date +%s); \
	  if $(MAKE) $$step; then \
	    if [ -e "$(STATUS)/$$step.skipped" ]; then res=skipped; else res=ok; fi; \
	  else res=FAILED; failed=$$((failed + 1)); fi; \
	  summary="$$summary $$step=$$res($$(( $$(date +%s) - s0 ))s)"; \
	done; \
	if [ $$failed -eq 0 ]; then verdict=OK; else verdict="FAILED ($$failed step(s))"; fi; \
	echo "make test: $$verdict -$$summary total=$$(( $$(date +%s) - t0 ))s"; \
	[ $$failed -eq 0 ]

# ---------------------------------------------------------------------------------------------
# demo / bench

demo: $(VENV_STAMP) collection
	@test -f tools/demo.sh || { echo "demo: tools/demo.sh does not exist" >&2; exit 1; }
	@bash tools/demo.sh

# BENCH picks the scripts (default: all), BENCH_ARGS passes options to them, e.g.
#   make bench BENCH=benchmarks/bench_key_delivery.py BENCH_ARGS='--interface skip --pairs 200'
# The scripts import the collection from its copy in .build and qkdsim/testbed from the repository root.
BENCH ?= benchmarks/bench_*.py
BENCH_ARGS ?=
bench: export PYTHONPATH := $(BUILD):$(CURDIR)
bench: $(VENV_STAMP) collection
	@for script in $(BENCH); do echo "== $$script"; "$(VPY)" "$$script" $(BENCH_ARGS); done

# ---------------------------------------------------------------------------------------------
# live testbed (docs/testbed.md; needs root): TESTBED_SITES sites as network namespaces with real
# charons, keyed and configured by playbooks/full_mesh.yml, every pair checked through its tunnel.
# TESTBED_ARGS passes more to ansible-playbook, e.g. TESTBED_ARGS='-e qsafe_mode=push'.
TESTBED_SITES ?= 5
TESTBED_PREFIX ?= qtb
TESTBED_STATE_DIR ?= /tmp/qsafe-testbed-$(TESTBED_PREFIX)
TESTBED_ARGS ?=
TESTBED_VARS = -e testbed_state_dir=$(TESTBED_STATE_DIR) -e testbed_prefix=$(TESTBED_PREFIX)
testbed testbed-down: export ANSIBLE_COLLECTIONS_PATH := $(BUILD)

testbed: $(VENV_STAMP) collection integration-packages
	@mkdir -p $(LOGS); log=$(LOGS)/testbed.log; \
	if ! ansible-playbook playbooks/testbed_up.yml -e testbed_sites=$(TESTBED_SITES) $(TESTBED_VARS) $(TESTBED_ARGS) >$$log 2>&1; then \
	  tail -n 40 $$log; echo "testbed: FAILED (log: $$log; clean up with: make testbed-down TESTBED_PREFIX=$(TESTBED_PREFIX))" >&2; exit 1; fi; \
	sed -n '/TASK \[Testbed up\]/,/^$$/p' $$log
	@echo "testbed: up ($(TESTBED_STATE_DIR)); remove it with: make testbed-down TESTBED_PREFIX=$(TESTBED_PREFIX)"

testbed-down: $(VENV_STAMP)
	@mkdir -p $(LOGS); log=$(LOGS)/testbed-down.log; \
	if ! ansible-playbook playbooks/testbed_down.yml $(TESTBED_VARS) >$$log 2>&1; then \
	  tail -n 40 $$log; echo "testbed-down: FAILED (log: $$log)" >&2; exit 1; fi; \
	sed -n '/TASK \[Removed\]/,/^$$/p' $$log

# ---------------------------------------------------------------------------------------------

clean:
	rm -rf "$(BUILD)" tests/output .pytest_cache .demo
	find . -path ./.venv -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf "$(VENV)"
