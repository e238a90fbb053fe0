#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: comfyui_workflow
short_description: Run an API-format workflow on ComfyUI and return its outputs
description:
  - Submits a workflow in ComfyUI's API format (a mapping of node ids to C(class_type) and C(inputs)) to
    C(POST /prompt), follows the run over the websocket (falling back to C(/history) polling when the socket drops or
    cannot be opened) and returns the outputs (images, gifs, audio, text ...).
  - A workflow rejected by ComfyUI fails the task with one readable line per problem (which node, which
    input, what is wrong, and for a missing model which sync command places it); the raw C(node_errors)
    are returned too.
  - When only some outputs are invalid, ComfyUI accepts the workflow, drops those outputs and runs the rest.
    The task then fails (status V(partial), naming the invalid nodes and the dropped outputs) once the rest has
    run, unless O(allow_partial=true).
  - A failed run's C(msg) is one line (the node, the file it was loading, the first line of ComfyUI's
    message); ComfyUI's full message is returned as RV(error_detail).
  - A workflow saved in the UI (graph) format is refused with a message saying how to export the API format.
  - The workflow is read from O(path) on the managed node or given inline as O(workflow). For a file on
    the controller use O(workflow) with C(lookup('file', 'x.json')).
  - In check mode nothing is submitted. The workflow is loaded and the overrides applied; when ComfyUI is
    reachable, the node types are checked against C(/object_info) and drop-down values (model names)
    against the server's lists.
version_added: "0.1.0"
author:
  - VisionSuit contributors (@visionsuit)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  workflow:
    description:
      - The workflow, as a dictionary or as JSON text, in ComfyUI's API format.
      - Mutually exclusive with O(path).
    type: raw
  path:
    description:
      - Path of the API-format workflow JSON file on the managed node.
      - Mutually exclusive with O(workflow).
    type: path
  overrides:
    description:
      - 'Input values to replace before submitting, as a mapping C(node_id) -> C(input_name) -> value,
        for example C({"3": {"seed": 42}}). Node ids and input names must exist in the workflow.'
    type: dict
    default: {}
  url:
    description:
      - Base URL of ComfyUI, for example C(http://gpu1:8188) or C(https://proxy/comfy). Overrides O(host)
        and O(port).
    type: str
  host:
    description: Host of ComfyUI.
    type: str
    default: 127.0.0.1
  port:
    description: Port of ComfyUI.
    type: int
    default: 8188
  timeout:
    description: Seconds to wait for the run to finish (only with O(wait=true)).
    type: float
    default: 900
  request_timeout:
    description: Seconds for each HTTP request to ComfyUI.
    type: float
    default: 30
  wait:
    description:
      - Wait for the run to finish and return its outputs. With V(false) the task returns once the workflow
        is queued (status V(queued)).
    type: bool
    default: true
  poll_interval:
    description: Seconds between C(/history) checks while the websocket is silent or gone.
    type: float
    default: 1.0
  websocket:
    description: Follow the run over the websocket; V(false) polls C(/history) only.
    type: bool
    default: true
  allow_partial:
    description:
      - Accept a run that ComfyUI only partly accepted (its answer listed C(node_errors), so it dropped the
        outputs behind the invalid nodes and ran the rest). The task succeeds with a warning and returns
        RV(problems), RV(node_errors) and RV(dropped_outputs).
      - With V(false) such a run fails the task (status V(partial)), also with O(wait=false).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Validates the workflow (and, when ComfyUI answers, its node types and model names) without submitting.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Every run changes the node (new files in ComfyUI's output directory), so the task reports V(changed)
    whenever a workflow is submitted.
seealso:
  - name: ComfyUI server routes
    description: The HTTP and websocket API this module uses.
    link: https://docs.comfy.org/development/comfyui-server/comms_routes
"""

EXAMPLES = r"""
- name: Run the validation workflow shipped with the collection (file on the controller)
  visionsuit.gpuworker.comfyui_workflow:
    workflow: "{{ lookup('file', 'workflows/validation.json') }}"
    overrides:
      "3": {seed: 42}
    timeout: 1200
  register: run

- name: Show the generated files
  ansible.builtin.debug:
    msg: "{{ run.outputs | map(attribute='filename') | list }}"

- name: Run a workflow file that is on the GPU node, against a ComfyUI on another port
  visionsuit.gpuworker.comfyui_workflow:
    path: /opt/visionsuit-gpuworker/workflows/validation.json
    port: 8190

- name: Queue only, do not wait
  visionsuit.gpuworker.comfyui_workflow:
    path: /srv/workflows/batch.json
    wait: false

- name: Run a workflow whose optional outputs may be invalid on this node (the valid ones still run)
  visionsuit.gpuworker.comfyui_workflow:
    path: /srv/workflows/multi-output.json
    allow_partial: true
  register: run

- name: Validate only (node types and model names against the server), submit nothing
  visionsuit.gpuworker.comfyui_workflow:
    path: /opt/visionsuit-gpuworker/workflows/validation.json
  check_mode: true
"""

RETURN = r"""
prompt_id:
  description: The id ComfyUI gave the run.
  returned: when submitted
  type: str
  sample: 7a25c2e9-d2d4-45c7-b191-6d216ebf9386
status:
  description: V(success), V(error), V(interrupted), V(queued) (O(wait=false)), V(invalid) (rejected),
    V(partial) (ComfyUI dropped invalid outputs and O(allow_partial=false); the task failed), or V(valid)
    (check mode).
  returned: always
  type: str
  sample: success
outputs:
  description: Every output of the run, one item per file (images, gifs, audio, video ...) or text.
  returned: when the run finished
  type: list
  elements: dict
  contains:
    node_id:
      description: Id of the node that produced it.
      type: str
    kind:
      description: Output kind as ComfyUI names it (V(images), V(gifs), V(audio), V(text) ...).
      type: str
    filename:
      description: File name (null for text).
      type: str
    subfolder:
      description: Sub-folder inside the ComfyUI folder.
      type: str
    type:
      description: ComfyUI folder (V(output), V(temp), V(input)).
      type: str
    text:
      description: The text, for text outputs.
      type: str
      returned: for text outputs
  sample: [{node_id: "9", kind: images, filename: validation_00001_.png, subfolder: "", type: output}]
assets:
  description: The identifiers of the output files (C(subfolder/filename) inside the output directory).
  returned: when the run finished
  type: list
  elements: str
  sample: [validation_00001_.png]
error:
  description: For a failed run, the node that failed and the exception (C(current_inputs) holds the node's
    plain input values, such as the C(ckpt_name) it was loading).
  returned: when status is error or interrupted
  type: dict
  sample: {node_id: "4", node_type: CheckpointLoaderSimple, exception_type: SafetensorError,
           exception_message: "Error while deserializing header: header too large",
           current_inputs: {ckpt_name: [sdxl_base.safetensors]}}
error_detail:
  description: ComfyUI's full exception message of the node that failed, which can span several lines (the
    task's C(msg) holds only its first line).
  returned: when status is error
  type: str
  sample: "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely
    succeed, ...\n Please file an issue with the following ..."
node_errors:
  description: ComfyUI's raw validation errors, keyed by node id.
  returned: when the workflow is rejected, or partly rejected (status V(partial), or O(allow_partial=true))
  type: dict
problems:
  description: One readable line per validation problem.
  returned: when the workflow is rejected, or partly rejected (status V(partial), or O(allow_partial=true))
  type: list
  elements: str
  sample: ["node 4 (CheckpointLoaderSimple) input ckpt_name: value 'x.safetensors' not in list (available: none)
           — the checkpoint is not present on the node; sync it with sync-checkpoints"]
dropped_outputs:
  description: The output node ids ComfyUI dropped from a partly rejected workflow (it ran the rest).
  returned: when the workflow is partly rejected
  type: list
  elements: str
  sample: ["9"]
run_status:
  description: For a partly rejected workflow that failed the task, the status of the part that ran
    (V(success), V(error), V(interrupted), or V(queued) with O(wait=false)).
  returned: when status is partial
  type: str
  sample: success
timings:
  description: C(wait_s) (seconds spent waiting) and C(execution_s) (ComfyUI's own timing, when known).
  returned: when the run finished
  type: dict
validated_against_server:
  description: In check mode, whether node types and model names were checked against the server.
  returned: in check mode
  type: bool
workflow:
  description: The workflow that was (or would be) submitted, overrides applied.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.ansible_common import run_module  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.comfyui.client import (  # noqa: E402
    ComfyClient,
    base_url_from,
    check_workflow,
    run_workflow,
)
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.comfyui.errors import (  # noqa: E402
    ComfyConnectionError,
    WorkflowExecutionError,
    WorkflowInputError,
)
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.comfyui.workflow import (  # noqa: E402
    apply_overrides,
    check_partial_run,
    load_workflow,
    output_identifier,
)


def _load(module):
    params = module.params
    if params["path"]:
        try:
            with open(params["path"], "rb") as handle:
                data = handle.read()
        except (IOError, OSError) as err:
            raise WorkflowInputError("cannot read workflow file %s (%s)" % (params["path"], err),
                                     field="path") from None
        workflow = load_workflow(data, source="workflow file %s" % params["path"])
    else:
        workflow = load_workflow(params["workflow"], source="workflow")
    return apply_overrides(workflow, params["overrides"] or {})


def _partial(module, client, workflow, result):
    """Fail (or, with allow_partial, warn) when ComfyUI dropped invalid outputs of the workflow."""
    partial = check_partial_run(client.last_node_errors, workflow, result,
                                allow_partial=module.params["allow_partial"])
    if partial is not None:
        result.update(node_errors=partial.node_errors, problems=partial.lines,
                      dropped_outputs=partial.dropped_outputs)
        module.warn(str(partial))


def _run(module):
    params = module.params
    workflow = _load(module)
    client = ComfyClient(base_url_from(params["url"], params["host"], params["port"]),
                         timeout=params["request_timeout"])
    result = {"changed": False, "workflow": workflow}
    if module.check_mode:
        try:
            check_workflow(client, workflow)
            result["validated_against_server"] = True
        except ComfyConnectionError as err:
            result["validated_against_server"] = False
            module.warn("ComfyUI not reachable, only the workflow file was checked: %s" % err)
        result.update(status="valid", changed=True)
        return result
    if not params["wait"]:
        prompt_id = client.submit(workflow)
        result.update(changed=True, prompt_id=prompt_id, status="queued")
        _partial(module, client, workflow, result)
        return result
    run = run_workflow(client, workflow, timeout=params["timeout"], interval=params["poll_interval"],
                       use_websocket=params["websocket"])
    result.update(run)
    result["changed"] = True
    result["assets"] = [output_identifier(o) for o in run["outputs"] if o.get("filename")]
    _partial(module, client, workflow, result)
    if run["status"] != "success":
        raise WorkflowExecutionError(dict(result))
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            workflow=dict(type="raw"),
            path=dict(type="path"),
            overrides=dict(type="dict", default={}),
            url=dict(type="str"),
            host=dict(type="str", default="127.0.0.1"),
            port=dict(type="int", default=8188),
            timeout=dict(type="float", default=900),
            request_timeout=dict(type="float", default=30),
            wait=dict(type="bool", default=True),
            poll_interval=dict(type="float", default=1.0),
            websocket=dict(type="bool", default=True),
            allow_partial=dict(type="bool", default=False),
        ),
        mutually_exclusive=[("workflow", "path")],
        required_one_of=[("workflow", "path")],
        supports_check_mode=True,
    )
    run_module(module, _run)


if __name__ == "__main__":
    main()
