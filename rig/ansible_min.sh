#!/usr/bin/env bash
# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
# The lowest ansible-core meta/runtime.yml declares (requires_ansible ">=2.16.0"; issue 14), in a cached venv
# outside the checkout (~/.cache/visionsuit-gpuworker/ansible-<version>):
#   - ansible-playbook --syntax-check of every playbook;
#   - the roles' real --check runs on localhost of tests/unit/test_role_preflights.py and
#     test_rollback_instances.py (VISIONSUIT_ANSIBLE_PLAYBOOK, tests/ansible_run.py);
#   - the ansible-test sanity tests whose verdict depends on the ansible-core version, on the built collection
#     extracted at $1 (the style tests, pylint and pep8, run on 2.19 in `make sanity`).
# ansible-core 2.16 runs on a Python 3.10-3.12 controller: without one this is skipped with a message.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
COLLECTION=$1
VERSION=${VISIONSUIT_ANSIBLE_MIN:-2.16.19}
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/visionsuit-gpuworker/ansible-$VERSION
SANITY_TESTS=(validate-modules ansible-doc import runtime-metadata future-import-boilerplate metaclass-boilerplate)

py=
for p in python3 python3.12 python3.11 python3.10; do
  if command -v "$p" >/dev/null && "$p" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))'; then
    py=$(command -v "$p"); break
  fi
done
[ -n "$py" ] || { echo ">> ansible-core $VERSION needs Python 3.10-3.12 on the controller, none found: skipped"; exit 0; }
if [ "$(cat "$VENV/.visionsuit-stamp" 2>/dev/null)" != "$VERSION" ]; then
  echo ">> creating $VENV ($py)"
  rm -rf "$VENV" && "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "ansible-core==$VERSION"
  echo "$VERSION" >"$VENV/.visionsuit-stamp"
fi
log=$(mktemp /tmp/visionsuit-ansible-min.XXXXXX)
trap 'rm -f "$log"' EXIT

echo ">> ansible-core $VERSION: --syntax-check of every playbook"
cd "$ROOT"
for p in provision.yml rollback.yml playbooks/*.yml; do
  "$VENV/bin/ansible-playbook" --syntax-check -i inventories/example "$p" >"$log" 2>&1 \
    || { cat "$log"; echo "ansible-core $VERSION: $p fails --syntax-check"; exit 1; }
done

echo ">> ansible-core $VERSION: the roles' --check runs (tests/unit/test_role_preflights.py, test_rollback_instances.py)"
VISIONSUIT_ANSIBLE_PLAYBOOK=$VENV/bin/ansible-playbook "$ROOT/.venv/bin/pytest" -q -p no:cacheprovider \
  tests/unit/test_role_preflights.py tests/unit/test_rollback_instances.py 2>&1 | sed 's/^/   /'

echo ">> ansible-core $VERSION: ansible-test sanity ${SANITY_TESTS[*]}"
# ansible-test bootstraps pip with get-pip.py from a host these machines cannot reach (rig/get_pip_offline.py).
pip_version=$(sed -n "s/^ *pip='\(.*\)',/\1/p" "$VENV"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1)
boot=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
[ -s "$boot" ] || { mkdir -p "$(dirname "$boot")" && cp "$ROOT/rig/get_pip_offline.py" "$boot"; }
controller=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
(cd "$COLLECTION" && PATH="$VENV/bin:$PATH" ansible-test sanity --python "$controller" --color no --requirements \
  "${SANITY_TESTS[@]/#/--test=}" >"$log" 2>&1) || { cat "$log"; exit 1; }
grep -E '^(Running sanity|ERROR)' "$log" | sed 's/^/   /' || true
