# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""visionsuit.gpuworker.paths (issue 15, fewer round trips): directories, links and removals in one call, run by the
real ansible-playbook on localhost with every path under tmp_path - as ansible.builtin.file would, idempotent, check
mode that writes nothing, and a clear error that changes nothing."""
from __future__ import annotations

import grp
import os
import pwd
import stat

import pytest

from tests import ansible_run

pytestmark = pytest.mark.skipif(not ansible_run.VENV_PLAYBOOK.exists(),
                                reason="ansible-playbook is not installed in the venv")

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def run(tmp_path, args, check=False, diff=False):
    task = {"name": "paths", "visionsuit.gpuworker.paths": args}
    if check:
        task["check_mode"] = True
    if diff:
        task["diff"] = True
    res, proc = ansible_run.run_tasks(tmp_path, [task])
    return res["paths"], proc


def args_for(tmp_path):
    target = tmp_path / "venv-bin-tool"
    target.write_text("#!/bin/sh\n")
    return {"absent": [str(tmp_path / "gone")],
            "directories": [str(tmp_path / "a" / "b" / "c"), str(tmp_path / "a" / "d")],
            "links": {str(tmp_path / "bin" / "tool"): str(target)},
            "owner": ME, "group": MY_GROUP, "mode": "0750"}


def test_removes_creates_links_then_changes_nothing(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "file").write_text("x")
    args = args_for(tmp_path)

    res, proc = run(tmp_path, args)
    assert res.get("changed") is True and not res.get("failed"), proc.stdout[-3000:]
    assert [(p["state"], p["before"], p["changed"]) for p in res["paths"]] == [
        ("absent", "directory", True), ("directory", "absent", True), ("directory", "absent", True),
        ("link", "absent", True)]
    # the missing parents get the mode too, as ansible.builtin.file does
    for d in ("a", "a/b", "a/b/c", "a/d"):
        assert stat.S_IMODE(os.stat(tmp_path / d).st_mode) == 0o750, d
    assert os.readlink(tmp_path / "bin" / "tool") == str(tmp_path / "venv-bin-tool")
    assert not (tmp_path / "gone").exists()

    again, proc = run(tmp_path, args)
    assert again.get("changed") is False, proc.stdout[-3000:]
    assert [p["changed"] for p in again["paths"]] == [False] * 4


def test_fixes_a_mode_and_a_link_to_something_else(tmp_path):
    (tmp_path / "a" / "d").mkdir(parents=True)
    os.chmod(tmp_path / "a" / "d", 0o700)
    (tmp_path / "bin").mkdir()
    (tmp_path / "old").write_text("")
    os.symlink(tmp_path / "old", tmp_path / "bin" / "tool")
    args = dict(args_for(tmp_path), absent=[], directories=[str(tmp_path / "a" / "d")])

    res, proc = run(tmp_path, args)
    assert [p["changed"] for p in res["paths"]] == [True, True], proc.stdout[-3000:]
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "d").st_mode) == 0o750
    assert os.readlink(tmp_path / "bin" / "tool") == str(tmp_path / "venv-bin-tool")


def test_check_mode_reports_and_writes_nothing(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "gone").mkdir()
    res, proc = run(tmp_path, args_for(tmp_path), check=True, diff=True)
    assert res.get("changed") is True, proc.stdout[-3000:]
    assert [p["changed"] for p in res["paths"]] == [True] * 4
    assert [d["after"]["state"] for d in res["diff"]] == ["absent", "directory", "directory", "link"]
    assert not (tmp_path / "a").exists() and not os.path.lexists(tmp_path / "bin" / "tool")
    assert (tmp_path / "gone").is_dir()


def test_a_file_in_the_way_fails_naming_it_and_changes_nothing(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("an operator's own script")
    (tmp_path / "gone").mkdir()
    res, proc = run(tmp_path, args_for(tmp_path))
    assert res.get("failed") is True
    assert "%s exists and is a file; a link is not put in its place" % (tmp_path / "bin" / "tool") in res["msg"]
    assert res.get("field") == "paths"
    # checked before any change: nothing removed or created
    assert (tmp_path / "gone").is_dir() and not (tmp_path / "a").exists()
    assert (tmp_path / "bin" / "tool").read_text() == "an operator's own script"


def test_a_link_to_a_missing_source_fails_and_a_path_named_twice_too(tmp_path):
    res, proc = run(tmp_path, {"links": {str(tmp_path / "tool"): str(tmp_path / "nope")}})
    assert res.get("failed") is True
    assert "the source of the link %s does not exist" % (tmp_path / "tool") in res["msg"]
    res, proc = run(tmp_path, {"directories": [str(tmp_path / "x")], "absent": [str(tmp_path / "x") + "/"]})
    assert res.get("failed") is True and "named more than once: %s" % (tmp_path / "x") in res["msg"]


def test_force_links_to_a_source_not_there_yet_and_replaces_a_file_not_a_directory(tmp_path):
    (tmp_path / "tool").write_text("old copy")
    (tmp_path / "dir").mkdir()
    src = str(tmp_path / "venv" / "bin" / "tool")
    res, proc = run(tmp_path, {"links": {str(tmp_path / "tool"): src}, "force": True})
    assert res.get("changed") is True, proc.stdout[-3000:]
    assert os.readlink(tmp_path / "tool") == src
    res, proc = run(tmp_path, {"links": {str(tmp_path / "dir"): src}, "force": True})
    assert res.get("failed") is True and "exists and is a directory" in res["msg"]
