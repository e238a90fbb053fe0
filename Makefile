# visionsuit.gpuworker developer entry points. On a fresh Debian 12 / Ubuntu machine (as root) use
# ./dev <target>, which installs make first; afterwards `make <target>` is the same thing.
#
#   make test        set everything up, then run every gate (lint, sanity, pytest, molecule)
#   make demo        set everything up, then provision a throwaway local worker and show it
#   make demo-clean  remove the demo container and MinIO
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
BUILD := $(ROOT)/.build
COLL_LINK := $(BUILD)/collections/ansible_collections/visionsuit/gpuworker
SYSTEM_PACKAGES := podman runc debootstrap git make python3-venv uidmap slirp4netns fuse-overlayfs \
	containernetworking-plugins iptables rclone curl ca-certificates openssh-client

export PATH := $(VENV)/bin:$(PATH)
export CONTAINERS_CONF := $(ROOT)/rig/containers.conf
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)/collections
export ANSIBLE_ROLES_PATH := $(ROOT)/roles
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1


.PHONY: bench-s3 bench-agent bench-provision bench-slots bench-drain
.PHONY: help setup system-deps venv rig lint ruff yamllint ansible-lint changelog-lint sanity build-collection \
	ansible-2.16 node-python pytest unit integration molecule test demo demo-clean clean

help:
	@sed -n 's/^#   //p' Makefile

## ---- set-up -------------------------------------------------------------------------------------
setup: system-deps venv rig

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo ">> installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.stamp $(VENV)/.packages $(COLL_LINK)

$(VENV)/.stamp: requirements-dev.txt
	@echo ">> creating $(VENV) from requirements-dev.txt"
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/pip install -q --upgrade pip
	@$(VENV)/bin/pip install -q -r requirements-dev.txt
	@touch $@

# The node packages (library + agent), editable: tests import them by the names the nodes use.
$(VENV)/.packages: $(VENV)/.stamp pyproject.toml agent/pyproject.toml
	@echo ">> installing visionsuit-gpuworker and visionsuit-gpu-agent (editable) into $(VENV)"
	@$(VENV)/bin/pip install -q --no-build-isolation --no-deps -e . -e ./agent
	@touch $@

# The checkout, seen by Ansible as the collection visionsuit.gpuworker.
$(COLL_LINK):
	@mkdir -p $(dir $@) && ln -sfn $(ROOT) $@

rig: venv
	@echo ">> MinIO binary: $$(rig/build-minio.sh)"
	@echo ">> base image:   $$(rig/build-base-image.sh)"
	@echo ">> rig SSH key:  $$(rig/ssh-key.sh)"

## ---- gates --------------------------------------------------------------------------------------
lint: ruff yamllint ansible-lint changelog-lint

ruff: venv
	@echo ">> ruff"; ruff check .

yamllint: venv
	@echo ">> yamllint"; yamllint -s .

ansible-lint: venv
	@echo ">> ansible-lint (production profile)"; ansible-lint -q --offline

# The changelog fragments (changelogs/fragments/) and changelogs/changelog.yaml are well-formed, and CHANGELOG.md is
# exactly what antsibull-changelog generates from them (it is never edited by hand).
changelog-lint: venv
	@echo ">> antsibull-changelog lint"; antsibull-changelog lint && antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml
	@out=$$(mktemp); trap 'rm -f "$$out"' EXIT; antsibull-changelog generate --output $$out >/dev/null; \
	  diff -u CHANGELOG.md $$out || { echo "CHANGELOG.md is not what changelogs/changelog.yaml generates (above): put changes in changelogs/fragments/, run antsibull-changelog generate"; exit 1; }

# ansible-test needs the collection under ansible_collections/<ns>/<name>, outside any git work tree: test the
# built collection (exactly what ships, MANIFEST.json included: validate-modules checks version_added against it).
# tests/sanity/ignore-<ansible version>.txt (none needed today) does not ship: it is copied in when present.
# ansible-test bootstraps pip with get-pip.py from a host these machines cannot reach: rig/get_pip_offline.py
# stands in for it ($(1): the venv whose ansible-test runs).
define GET_PIP
v=$$(sed -n "s/^ *pip='\(.*\)',/\1/p" $(1)/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1); \
  boot=$$HOME/.ansible/test/cache/get_pip_$$(echo $$v | tr . _).py; \
  [ -s "$$boot" ] || { mkdir -p $$(dirname $$boot) && cp rig/get_pip_offline.py $$boot; }
endef
define EXTRACT
dir=$$(mktemp -d /tmp/visionsuit-sanity.XXXXXX); trap 'rm -rf "$$dir"' EXIT; \
	coll=$$dir/ansible_collections/visionsuit/gpuworker; mkdir -p $$coll; \
	tar -xzf $(BUILD)/dist/visionsuit-gpuworker-*.tar.gz -C $$coll; \
	if [ -d tests/sanity ]; then mkdir -p $$coll/tests && cp -r tests/sanity $$coll/tests/; fi
endef

# Every sanity test on the whole collection (plugins, roles, playbooks, agent, docs), Python 3.11 (controller).
sanity: build-collection
	@echo ">> ansible-test sanity (the built collection, ansible-core $$(ansible --version | sed -n 's/.*core \([0-9.]*\).*/\1/p'))"
	@$(call GET_PIP,$(VENV))
	@$(EXTRACT); \
	cd $$coll && ansible-test sanity --python 3.11 --color no --requirements \
	  >$(BUILD)/sanity.log 2>&1 || { cat $(BUILD)/sanity.log; exit 1; }
	@grep -E '^(Running sanity|ERROR)' $(BUILD)/sanity.log | sed 's/^/   /' || true

# The lowest ansible-core meta/runtime.yml declares (requires_ansible >=2.16) in a cached venv outside the checkout:
# --syntax-check of every playbook, the roles' --check runs of tests/unit, the version-dependent sanity tests.
ansible-2.16: build-collection
	@$(EXTRACT); rig/ansible_min.sh $$coll

# The node code on the nodes' Pythons 3.10 and 3.12 (pyenv or PATH; absent ones skipped): rig/node_python.sh.
node-python: build-collection
	@$(call GET_PIP,$(VENV))
	@$(EXTRACT); rig/node_python.sh $$coll

# Build the collection, install the tarball into a scratch path and render every module's docs from there.
build-collection: venv
	@rm -rf $(BUILD)/dist && mkdir -p $(BUILD)/dist
	@ansible-galaxy collection build --force --output-path $(BUILD)/dist . >/dev/null
	@echo ">> built $$(ls $(BUILD)/dist/*.tar.gz)"
	@dir=$$(mktemp -d /tmp/visionsuit-install.XXXXXX); trap 'rm -rf "$$dir"' EXIT; \
	ansible-galaxy collection install --force --offline -p $$dir $(BUILD)/dist/*.tar.gz >/dev/null 2>&1; \
	for m in $$(ls plugins/modules/*.py | xargs -n1 basename | sed 's/\.py$$//'); do \
	  out=$$(ANSIBLE_COLLECTIONS_PATH=$$dir ansible-doc visionsuit.gpuworker.$$m 2>&1) && \
	    ! echo "$$out" | grep -qE 'not found|Error loading' || { echo "$$out"; echo "ansible-doc $$m failed"; exit 1; }; \
	done; \
	ANSIBLE_COLLECTIONS_PATH=$$dir ansible-doc -t role visionsuit.gpuworker.comfyui >/dev/null; \
	echo ">> installed it and rendered the docs of: $$(ls plugins/modules/*.py | xargs -n1 basename | sed 's/\.py$$//' | tr '\n' ' ')"; \
	XDG_CACHE_HOME=$$dir/cache ANSIBLE_COLLECTIONS_PATH=$$dir ansible localhost -o -m ansible.builtin.debug \
	  -a "msg={{ query('visionsuit.gpuworker.node_wheel', 'visionsuit-gpuworker', 'visionsuit-gpu-agent') | map('basename') | join(' ') }}" \
	  >$$dir/wheels.log 2>&1 || { cat $$dir/wheels.log; echo "the installed collection cannot build its node wheels"; exit 1; }; \
	echo ">> the installed collection builds its node wheels: $$(grep -o 'visionsuit_[a-z_]*-[^ ]*\.whl' $$dir/wheels.log | tr '\n' ' ')"; \
	if tar -tzf $(BUILD)/dist/*.tar.gz | grep -E '(^|/)(build|tests|comfyui-standin)/|egg-info|inventories/demo'; then \
	  echo "the tarball ships development files (above)"; exit 1; fi

pytest: rig
	@echo ">> pytest (unit + integration)"; pytest -q -p no:cacheprovider

unit: venv
	pytest -q tests/unit

integration: rig
	pytest -q tests/integration

molecule: rig
	@echo ">> molecule"
	@export VISIONSUIT_BASE_IMAGE=$$(rig/build-base-image.sh) VISIONSUIT_SSH_DIR=$$(rig/ssh-key.sh); molecule test --all

test: setup lint sanity ansible-2.16 node-python pytest molecule
	@echo ">> all gates passed"

## ---- benchmarks (figures and ratios, never pass/fail) -------------------------------------------
bench-s3: rig
	python3 benchmarks/s3_sync.py

bench-agent: rig
	python3 benchmarks/agent_overhead.py

bench-provision: rig
	python3 benchmarks/provision.py

bench-slots: rig
	python3 benchmarks/agent_slots.py

bench-drain: rig
	python3 benchmarks/drain_cost.py

## ---- demo ---------------------------------------------------------------------------------------
demo: setup
	@rig/demo.sh up

demo-clean:
	@rig/demo.sh down

clean: demo-clean
	rm -rf $(BUILD)
