#!/usr/bin/env bash
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
# The node-side code on the nodes' Python versions (issue 14): Ubuntu 22.04 has 3.10, Debian 12 3.11, Ubuntu
# 24.04 3.12. For each, found under pyenv (~/.pyenv/versions/3.X.*) or on PATH (python3.X), this
#   - builds the two node wheels as the controller does (plugins/plugin_utils/wheel.py) and installs them, not
#     editable, into a cached venv outside the checkout (~/.cache/visionsuit-gpuworker/py3.X, with pytest and
#     PyYAML, which the nodes have as python3-yaml);
#   - imports every node module from that venv (rig/node_imports.py);
#   - runs the node code's pure unit tests (no MinIO, no stand-in servers) against the installed wheels;
#   - runs ansible-test's import and compile sanity tests on that Python (the modules and module_utils run on
#     the node's Python), when a built collection is given as $1 (`make node-python` passes one).
# On the development venv's own version (3.11) only the import check of the installed wheels runs: the unit tests
# and ansible-test's import test already run there (`make pytest`, `make sanity`), from the source tree.
# A version that is not installed is skipped with a message, never a failure (CI machines may have no pyenv).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/visionsuit-gpuworker
COLLECTION=${1:-}
VERSIONS=${VISIONSUIT_NODE_PYTHONS:-3.10 3.11 3.12}
DEV_VERSION=$("$ROOT/.venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# What the test venvs hold (pins as in requirements-dev.txt); a change rebuilds them.
TEST_REQUIREMENTS="pytest==9.2.0 pytest-timeout==2.4.0 PyYAML==6.0.2"
# Pure unit tests of the node packages: stdlib + PyYAML + pytest, no servers, no Ansible.
TESTS=(
  tests/unit/test_comfyui_pins.py tests/unit/test_distros.py tests/unit/test_minio_env.py
  tests/unit/test_one_version.py tests/unit/test_s3client_retries.py tests/unit/test_s3client_sigv4.py
  tests/unit/test_s3sync_paths.py tests/unit/test_service_ready.py tests/unit/test_drain_logic.py
  tests/unit/test_no_secret_leaks.py tests/unit/test_comfy_client_unit.py
  agent/tests/test_agent_envelope.py agent/tests/test_agent_handler.py agent/tests/test_agent_issues.py
  agent/tests/test_agent_config_env_file.py agent/tests/test_agent_version.py
)
# Not here: the source-tree cases of the version tests (these venvs hold the installed wheels, with metadata
# and no tree around them) and the cross-checks against test-only libraries (botocore; jsonschema's are skipped).
DESELECT=(
  --deselect tests/unit/test_one_version.py::test_without_metadata_the_source_trees_pyproject_is_read
  --deselect agent/tests/test_agent_version.py::test_a_source_tree_without_metadata_reads_its_pyproject
  --deselect tests/unit/test_s3client_sigv4.py::test_matches_botocore_for_unicode_keys_and_queries
)

find_python() {
  local v=$1 p
  for p in $(ls -d "$HOME"/.pyenv/versions/"$v".*/bin/python3 2>/dev/null | sort -V -r); do
    [ -x "$p" ] && { echo "$p"; return 0; }
  done
  command -v "python$v" 2>/dev/null || return 1
}

work=$(mktemp -d /tmp/visionsuit-node-python.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The wheels the nodes get, built by the collection's own builder (standard library only) with this Python.
wheels=$("$ROOT/.venv/bin/python" - "$ROOT" "$work/wheels" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1] + "/plugins/plugin_utils")
import wheel
print(wheel.build_wheel(sys.argv[1], sys.argv[2]), wheel.build_wheel(sys.argv[1] + "/agent", sys.argv[2]))
EOF
)

status=0
for v in $VERSIONS; do
  py=$(find_python "$v") || { echo ">> python$v not found: skipped"; continue; }
  venv=$CACHE/py$v
  stamp="$("$py" -c 'import sys; print(sys.version.split()[0])') $TEST_REQUIREMENTS"
  if [ "$(cat "$venv/.visionsuit-stamp" 2>/dev/null)" != "$stamp" ]; then
    echo ">> creating $venv ($py)"
    rm -rf "$venv" && "$py" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check $TEST_REQUIREMENTS
    echo "$stamp" >"$venv/.visionsuit-stamp"
  fi
  echo ">> Python $v ($py): the node wheels, installed"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-index --force-reinstall $wheels
  (cd "$work" && "$venv/bin/python" -I "$ROOT/rig/node_imports.py") || status=1
  [ "$v" != "$DEV_VERSION" ] || continue
  # The repository root on sys.path only for tests/ and rig/ (conftest.py); the packages come from the venv:
  # there is no visionsuit_gpuworker/ or visionsuit_gpu_agent/ folder at the root.
  (cd "$ROOT" && "$venv/bin/python" -m pytest -q -p no:cacheprovider -o addopts="" -W error::pytest.PytestConfigWarning \
    "${DESELECT[@]}" "${TESTS[@]}" 2>&1 | sed 's/^/   /') || status=1
  if [ -n "$COLLECTION" ]; then
    ln -sfn "$py" "$work/python$v"
    echo ">> ansible-test sanity import + compile on Python $v (modules, module_utils)"
    (cd "$COLLECTION" && PATH="$work:$PATH" ansible-test sanity --test import --test compile --python "$v" \
      --color no --requirements >"$work/sanity-$v.log" 2>&1) || { cat "$work/sanity-$v.log"; status=1; }
    grep -E '^(Running sanity|ERROR)' "$work/sanity-$v.log" | sed 's/^/   /' || true
  fi
done
exit $status
