#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: paths
short_description: Directories, symbolic links and removals, many in one task
version_added: "0.1.0"
description:
  - Removes the O(absent) paths, creates the O(directories) (with their missing parents) and makes the O(links),
    with O(owner), O(group) and O(mode), as M(ansible.builtin.file) does for one path.
  - One call on the node for the whole list, where a looped M(ansible.builtin.file) task costs one round trip per
    item - and round trips are most of an idempotent re-run's time over SSH (benchmarks/README.md, C(provision.py)).
  - Fails, changing nothing, when an entry cannot be brought to its state (a file where a directory or a link
    should be, a link whose source does not exist); the message names the path.
author:
  - VisionSuit contributors (@visionsuit)
options:
  directories:
    description:
      - Absolute paths of directories to create when they do not exist (with their missing parents), and to give
        O(owner), O(group) and O(mode).
    type: list
    elements: path
    default: []
  links:
    description:
      - Symbolic links to make, as a dictionary of the link's absolute path to what it points to (the source
        must exist unless O(force)). A link to something else is replaced; the link itself gets O(owner) and
        O(group).
    type: dict
    default: {}
  absent:
    description: Absolute paths to remove (a directory with its contents); removed first.
    type: list
    elements: path
    default: []
  owner:
    description: Owner of the directories and links; omitted, left as it is.
    type: str
  group:
    description: Group of the directories and links; omitted, left as it is.
    type: str
  mode:
    description: Mode of the directories (octal string such as V('0755'), or symbolic); omitted, left as it is.
    type: raw
  force:
    description:
      - As M(ansible.builtin.file)'s C(force) for links - a link is made even when its source does not exist (yet),
        and a regular file in its place is replaced. A directory in its place is an error either way.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports what each entry would change; nothing is created, changed or removed.
  diff_mode:
    support: full
    description: One before/after state per entry that changes.
notes:
  - Without O(force), a regular file or a directory where a link should be is an error, not something to replace.
seealso:
  - module: ansible.builtin.file
"""

EXAMPLES = r"""
- name: Create the directories ComfyUI writes to, in one call
  visionsuit.gpuworker.paths:
    directories: "{{ ['input', 'output', 'models/loras'] | map('regex_replace', '^', '/opt/comfyui/') }}"
    owner: comfyui
    group: comfyui
    mode: "0775"

- name: Link the node commands into /usr/local/bin, and remove one that is off
  visionsuit.gpuworker.paths:
    links:
      /usr/local/bin/sync-models: /opt/visionsuit/venv/bin/sync-models
      /usr/local/bin/upload-outputs: /opt/visionsuit/venv/bin/upload-outputs
    absent:
      - /usr/local/bin/test-minio
    force: true
"""

RETURN = r"""
paths:
  description: Each path (O(absent), then O(directories), then O(links)) with what was (or in check mode would be) done.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The entry's path.
      type: str
    state:
      description: The state asked for - V(absent), V(directory) or V(link).
      type: str
    before:
      description: What was there - V(absent), V(directory), V(link), V(file) or V(other).
      type: str
    changed:
      description: Whether the entry changed (its existence, link target, owner, group or mode).
      type: bool
"""

import os  # noqa: E402
import shutil  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_bytes, to_native  # noqa: E402

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.ansible_common import run_module  # noqa: E402
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError  # noqa: E402


def _b(path):
    """A path as the bytes os functions take (Ansible's conversion for file names)."""
    return to_bytes(path, errors="surrogate_or_strict")


def current_state(b_path):
    """What is at the path now (a link is a link, whatever it points to)."""
    if os.path.islink(b_path):
        return "link"
    if not os.path.lexists(b_path):
        return "absent"
    if os.path.isdir(b_path):
        return "directory"
    if os.path.isfile(b_path):
        return "file"
    return "other"


def check_entry(entry, before, force=False):
    """The reason this entry cannot be brought to its state, or None. Runs for every entry before any change."""
    path, state = entry["path"], entry["state"]
    if not os.path.isabs(path):
        return "paths: %s must be an absolute path" % path
    if state == "directory" and before not in ("absent", "directory"):
        if not (before == "link" and os.path.isdir(_b(path))):
            return "paths: %s exists and is a %s, not a directory" % (path, before)
    if state == "link":
        if not entry.get("src"):
            return "paths: the link %s has no source (links: {path: source})" % path
        if before not in ("absent", "link") and not (force and before == "file"):
            return "paths: %s exists and is a %s; a link is not put in its place" % (path, before)
        src = entry["src"] if os.path.isabs(entry["src"]) else os.path.join(os.path.dirname(path), entry["src"])
        if not force and not os.path.exists(_b(src)):
            return "paths: the source of the link %s does not exist: %s" % (path, entry["src"])
    return None


def apply_entry(module, entry, before):
    """Bring one checked entry to its state; returns whether it changed."""
    path, state = entry["path"], entry["state"]
    b_path = _b(path)
    if state == "absent":
        if before != "absent" and not module.check_mode:
            if before == "directory":
                shutil.rmtree(b_path)
            else:
                os.unlink(b_path)
        return before != "absent"
    file_args = module.load_file_common_arguments(
        {"path": path, "owner": entry.get("owner"), "group": entry.get("group"),
         "mode": entry.get("mode") if state == "directory" else None})
    if state == "directory":
        if before == "absent":
            # each missing parent gets the entry's owner, group and mode, as ansible.builtin.file does
            missing = []
            head = path
            while head and head != "/" and not os.path.lexists(_b(head)):
                missing.append(head)
                head = os.path.dirname(head)
            if module.check_mode:
                return True
            for directory in reversed(missing):
                os.mkdir(_b(directory))
                module.set_fs_attributes_if_different(dict(file_args, path=directory), True, expand=False)
            return True
        return module.set_fs_attributes_if_different(file_args, False, expand=False)
    # link
    src = entry["src"]
    if before == "link" and os.readlink(b_path) == _b(src):
        # the link itself (not its target): lchown
        return module.set_owner_if_different(path, entry.get("owner"), False, expand=False) | \
            module.set_group_if_different(path, entry.get("group"), False, expand=False)
    if module.check_mode:
        return True
    if before in ("link", "file"):
        os.unlink(b_path)
    os.symlink(_b(src), b_path)
    module.set_owner_if_different(path, entry.get("owner"), True, expand=False)
    module.set_group_if_different(path, entry.get("group"), True, expand=False)
    return True


def entries_of(params):
    """The paths to handle, in order (absent, directories, links), each as {path, state, src, owner, group, mode}."""
    common = {"owner": params["owner"], "group": params["group"]}
    entries = ([dict(path=p, state="absent") for p in params["absent"]]
               + [dict(common, path=p, state="directory", mode=params["mode"]) for p in params["directories"]]
               + [dict(common, path=p, state="link", src=to_native(src) if src is not None else None)
                  for p, src in sorted(params["links"].items())])
    seen, twice = set(), []
    for e in entries:
        path = os.path.normpath(e["path"])
        if path in seen:
            twice.append(e["path"])
        seen.add(path)
    if twice:
        raise GpuWorkerError("paths: named more than once: %s" % ", ".join(sorted(set(twice))), field="paths")
    return entries


def main_func(module):
    entries = entries_of(module.params)
    befores = [current_state(_b(e["path"])) for e in entries]
    problems = [p for p in (check_entry(e, b, module.params["force"]) for e, b in zip(entries, befores)) if p]
    if problems:
        raise GpuWorkerError("; ".join(problems), field="paths")
    results, diffs = [], []
    for entry, before in zip(entries, befores):
        try:
            changed = bool(apply_entry(module, entry, before))
        except OSError as err:  # something else changed the path meanwhile, or a read-only file system
            raise GpuWorkerError("paths: %s: %s" % (entry["path"], to_native(err)), field="paths")
        results.append({"path": entry["path"], "state": entry["state"], "before": before, "changed": changed})
        if changed:
            diffs.append({"before_header": entry["path"], "after_header": entry["path"],
                          "before": {"path": entry["path"], "state": before},
                          "after": {"path": entry["path"], "state": entry["state"]}})
    result = {"changed": any(r["changed"] for r in results), "paths": results}
    if module._diff:
        result["diff"] = diffs
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            directories=dict(type="list", elements="path", default=[]),
            links=dict(type="dict", default={}),
            absent=dict(type="list", elements="path", default=[]),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw"),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run_module(module, main_func)


if __name__ == "__main__":
    main()
