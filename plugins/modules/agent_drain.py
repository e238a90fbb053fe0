#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: agent_drain
short_description: Drain the VisionSuit GPU agent before a restart (waiting for its running jobs), resume it after
version_added: "0.1.0"
description:
  - Restarts that kill no job. With O(state=drained), asks the agent at O(url) to start no new job (on the whole
    agent, or on render slot O(slot) only - one ComfyUI instance of a multi-GPU node) and waits up to O(timeout)
    seconds until the jobs running there have ended. Queued jobs stay queued; while the whole agent (or every
    slot) is drained, new jobs get HTTP 503 with C(Retry-After). The drain survives an agent restart.
  - With O(state=resumed), ends the drain (of the agent, or of O(slot)); the queued jobs start.
  - When nothing listens at O(url) (connection refused - the first provision of a node, a host without an agent)
    there is nothing to drain or resume; the result says C(agent=absent) and nothing changed.
  - When jobs still run after O(timeout), the drain this task started is undone (the node goes on taking jobs)
    and the task fails naming the jobs and their slots, and the variables that decide in the roles -
    C(visionsuit_drain_timeout) to wait longer, C(-e visionsuit_force_restart=true) to restart anyway. With
    O(force=true) it warns instead and leaves the agent drained for the restart.
  - A slot the agent does not have (its configuration lists fewer ComfyUI instances) has nothing to drain; an
    agent older than the drain API is reported as C(agent=unsupported) with a warning.
author:
  - VisionSuit contributors (@visionsuit)
options:
  url:
    description: The agent's base URL, for example C(http://127.0.0.1:8081) (C(https://) when it has a certificate).
    type: str
    required: true
  token:
    description: The agent's API token (C(server.api_token), the gpu_agent role's C(gpu_agent_api_token)).
    type: str
    required: true
  state:
    description:
      - V(drained) drains and waits for the running jobs; V(resumed) ends the drain.
    type: str
    choices: [drained, resumed]
    default: drained
  slot:
    description:
      - The render slot (ComfyUI instance I(i) is slot I(i)) to drain or resume; omitted, the whole agent.
    type: int
  timeout:
    description:
      - Seconds to wait for the jobs running there to end (V(state=drained)). V(0) does not wait. Longer than an
        hour is asked of the agent an hour at a time.
    type: int
    default: 600
  force:
    description:
      - When jobs still run after O(timeout), warn and succeed (the agent stays drained) instead of failing.
      - When the agent cannot be drained at all (token refused, allow-list, unreachable), warn and succeed with
        C(agent=error).
    type: bool
    default: false
  validate_certs:
    description:
      - Check the agent's TLS certificate (an agent with its own certificate, reached at 127.0.0.1, needs V(false)).
    type: bool
    default: true
  ca_path:
    description: A PEM file of the certificate authority that signed the agent's certificate.
    type: path
attributes:
  check_mode:
    support: full
    description: Reads the agent's C(/healthz) only and says what a real run would do; sends no drain or resume.
    details:
      - Never fails on running jobs in check mode; C(running) lists them.
  diff_mode:
    support: none
    description: The drain state is not a file or a setting to diff.
notes:
  - The restart handlers of the comfyui and gpu_agent roles use it (drain, restart, wait, resume per unit).
  - The client's HTTP timeout is O(timeout) plus 30 seconds (the agent answers once its wait is over).
"""

EXAMPLES = r"""
- name: Drain slot 1 before restarting comfyui@1 (wait up to 10 minutes for its job)
  visionsuit.gpuworker.agent_drain:
    url: http://127.0.0.1:8081
    token: "{{ gpu_agent_api_token }}"
    slot: 1
    timeout: 600

- name: Resume slot 1 once comfyui@1 answers again
  visionsuit.gpuworker.agent_drain:
    url: http://127.0.0.1:8081
    token: "{{ gpu_agent_api_token }}"
    slot: 1
    state: resumed

- name: Drain the whole agent (its own certificate), restart even with jobs running after 60 s
  visionsuit.gpuworker.agent_drain:
    url: https://127.0.0.1:8081
    token: "{{ gpu_agent_api_token }}"
    timeout: 60
    force: true
    validate_certs: false
"""

RETURN = r"""
agent:
  description:
    - V(present) (an agent answered), V(absent) (nothing listens), V(unsupported) (an agent without the drain API)
      or V(error) (it could not be drained and O(force) let the task succeed).
  returned: always
  type: str
slot:
  description: The slot asked for (null - the whole agent).
  returned: always
  type: int
draining:
  description: Whether the agent (or the slot) starts no new job now.
  returned: always
  type: bool
drained_slots:
  description: Every slot that starts no new job now.
  returned: always
  type: list
  elements: int
accepting_jobs:
  description: Whether the agent takes new jobs (false while it, or every slot, is drained).
  returned: always
  type: bool
idle:
  description: No job runs there (the whole agent, or the slot).
  returned: always
  type: bool
running:
  description: 'The jobs still running there, for example C([{"job_id": "j1", "slot": 0}]).'
  returned: always
  type: list
  elements: dict
queued:
  description: Jobs waiting in the agent's queue.
  returned: always
  type: int
since:
  description: When the drain began (unix time; null when nothing is drained).
  returned: always
  type: float
waited:
  description: Seconds spent waiting for the running jobs.
  returned: always
  type: float
forced:
  description: Jobs still ran after O(timeout), or the agent could not be drained, and O(force) let the task succeed.
  returned: always
  type: bool
undone:
  description: The task failed on a timeout and ended the drain it had started.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.ansible_common import run_module  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.service import drain  # noqa: E402


def main_logic(module):
    params = module.params
    if params["slot"] is not None and params["slot"] < 0:
        raise GpuWorkerError("must be a slot index (0, 1, ...)", field="slot")
    if params["timeout"] < 0:
        raise GpuWorkerError("must be 0 or more seconds", field="timeout")
    client = drain.AgentClient(params["url"], params["token"], validate_certs=params["validate_certs"],
                               ca_path=params["ca_path"])
    if params["state"] == "resumed":
        result = drain.resume(client, client.url, slot=params["slot"], check_mode=module.check_mode)
    else:
        result = drain.drain(client, client.url, slot=params["slot"], timeout=params["timeout"],
                             force=params["force"], check_mode=module.check_mode)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            token=dict(type="str", required=True, no_log=True),
            state=dict(type="str", default="drained", choices=["drained", "resumed"]),
            slot=dict(type="int"),
            timeout=dict(type="int", default=600),
            force=dict(type="bool", default=False),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    run_module(module, main_logic)


if __name__ == "__main__":
    main()
