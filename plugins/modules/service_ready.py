#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: service_ready
short_description: Wait until a service answers over HTTP; when it does not, report its unit state and journal
version_added: "0.1.0"
description:
  - Probes O(url) until it answers O(status_code) (and, with O(json), those top-level values), within one
    wall-clock O(timeout) - however long each try takes.
  - With O(unit), stops early when the systemd unit is failed or inactive (for example after its start limit
    was hit), and the failure message carries the unit's state, its restart count and the last lines of its
    journal - so an import error of ComfyUI shows in the play, not only "Connection refused".
  - Changes nothing on the host.
author:
  - VisionSuit contributors (@visionsuit)
options:
  url:
    description: The http(s) URL to GET, for example C(http://127.0.0.1:8188/system_stats).
    type: str
    required: true
  unit:
    description: The systemd unit serving O(url); its state and journal explain a failed wait.
    type: str
  timeout:
    description: Seconds to wait in all, from the first try.
    type: int
    default: 120
  interval:
    description: Seconds between tries.
    type: float
    default: 1.0
  request_timeout:
    description: Seconds one try may take (never more than the time left).
    type: float
    default: 5.0
  status_code:
    description: The HTTP status that means ready.
    type: int
    default: 200
  json:
    description: 'Top-level keys and values the JSON answer must hold, for example C({"status": "ok"}).'
    type: dict
  validate_certs:
    description: Check the server's TLS certificate (an agent with its own self-signed certificate needs V(false)).
    type: bool
    default: true
  journal_lines:
    description: Journal lines of O(unit) to report when the wait fails.
    type: int
    default: 20
attributes:
  check_mode:
    support: full
    description: Changes nothing either way.
    details:
      - In check mode it makes one try and never fails, so a dry run against a fresh host (no service yet)
        passes and says what it saw.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
notes:
  - Needs C(systemctl) and C(journalctl) on the host for O(unit); without them the message has no unit details.
"""

EXAMPLES = r"""
- name: Wait until ComfyUI answers /system_stats
  visionsuit.gpuworker.service_ready:
    url: http://127.0.0.1:8188/system_stats
    unit: comfyui.service
    timeout: 120

- name: Wait until the agent is healthy (its own certificate)
  visionsuit.gpuworker.service_ready:
    url: https://127.0.0.1:8081/healthz
    unit: visionsuit-gpu-agent.service
    json:
      status: ok
    validate_certs: false
"""

RETURN = r"""
ready:
  description: Whether the service answered as expected.
  returned: always
  type: bool
elapsed:
  description: Seconds spent waiting.
  returned: always
  type: float
attempts:
  description: Tries made.
  returned: always
  type: int
status:
  description: HTTP status of the last answer (null when nothing answered).
  returned: always
  type: int
json:
  description: The last answer, parsed as JSON (null when it was not JSON or nothing answered).
  returned: always
  type: raw
unit_state:
  description: The unit's LoadState, ActiveState, SubState, Result and NRestarts (with O(unit), when the wait failed).
  returned: when the wait failed and O(unit) is set
  type: dict
journal:
  description: The last O(journal_lines) lines of the unit's journal.
  returned: when the wait failed and O(unit) is set
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.ansible_common import run_module  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.service import ready  # noqa: E402

UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result", "NRestarts")


def _unit_state(module, unit):
    systemctl = module.get_bin_path("systemctl")
    if not systemctl:
        return {}
    cmd = [systemctl, "show", "--no-pager"] + ["--property=%s" % p for p in UNIT_PROPERTIES] + [unit]
    rc, out, _err = module.run_command(cmd)
    return ready.parse_unit_show(out) if rc == 0 else {}


def _journal(module, unit, keep):
    journalctl = module.get_bin_path("journalctl")
    if not journalctl or keep <= 0:
        return []
    rc, out, _err = module.run_command([journalctl, "--no-pager", "--output=cat", "--lines=%d" % keep, "--unit", unit])
    return ready.journal_lines(out, keep) if rc == 0 else []


def main_logic(module):
    params = module.params
    url = params["url"]
    if not url.startswith(("http://", "https://")):
        raise GpuWorkerError("not an http(s) URL: %r" % (url,), field="url")
    if params["timeout"] < 0:
        raise GpuWorkerError("must be 0 or more seconds", field="timeout")
    unit = params["unit"]
    gave_up = (lambda: ready.unit_gave_up(_unit_state(module, unit))) if unit else None
    timeout = 0 if module.check_mode else params["timeout"]
    result = ready.wait_ready(url, timeout, interval=params["interval"], request_timeout=params["request_timeout"],
                              status_code=params["status_code"], expect_json=params["json"],
                              validate_certs=params["validate_certs"], gave_up=gave_up)
    out = dict(changed=False, **{k: result[k] for k in ("ready", "elapsed", "attempts", "status", "json")})
    if result["ready"]:
        return out
    if module.check_mode:
        out["msg"] = "check mode: one try, not ready (%s); a real run waits up to %s s" % (
            result["last_error"], params["timeout"])
        return out
    state = _unit_state(module, unit) if unit else None
    journal = _journal(module, unit, params["journal_lines"]) if unit else None
    raise GpuWorkerError(ready.explain(url, result, params["timeout"], unit, state, journal),
                         details=dict(ready=False, elapsed=result["elapsed"], attempts=result["attempts"],
                                      status=result["status"], unit_state=state or {}, journal=journal or []))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            unit=dict(type="str"),
            timeout=dict(type="int", default=120),
            interval=dict(type="float", default=1.0),
            request_timeout=dict(type="float", default=5.0),
            status_code=dict(type="int", default=200),
            json=dict(type="dict"),
            validate_certs=dict(type="bool", default=True),
            journal_lines=dict(type="int", default=20),
        ),
        supports_check_mode=True,
    )
    run_module(module, main_logic)


if __name__ == "__main__":
    main()
