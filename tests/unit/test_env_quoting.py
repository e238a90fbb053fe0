# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""minio.env is written so that its three readers get back exactly the values given: the collection's parser
(plugins/module_utils/s3/env.py), systemd's EnvironmentFile= and a POSIX shell's `.`. The real template
(roles/comfyui/templates/minio.env.j2) is rendered with Jinja2 and the collection's filter env_quote (the
library's quote_env_value) for hostile values, and read back by each reader.

systemd: no service manager runs here (no systemd-run), so the test calls systemd's own env-file parser,
load_env_file() of libsystemd-shared (the function EnvironmentFile= uses, src/basic/env-file.c), through ctypes
in a child process. Where that library is missing, a reader written to the documented rules of systemd.exec(5)
stands in (and is checked against the library wherever the library is there). No unit of the collection loads
minio.env with EnvironmentFile= today (the timers pass VISIONSUIT_MINIO_ENV to the node commands, whose parser
the molecule scenario runs under the real systemd), so this test is where systemd's own reading is checked.
"""
from __future__ import annotations

import ctypes.util  # noqa: F401 - ctypes is used by the child process; imported here to fail early if absent
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from ansible.errors import AnsibleFilterError
from ansible.plugins.filter.core import FilterModule as CoreFilters
from ansible.plugins.test.core import TestModule as CoreTests

from ansible_collections.visionsuit.gpuworker.plugins.filter.env_quote import FilterModule
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3.env import load_minio_env, parse_env_text, quote_env_value

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles" / "comfyui" / "templates" / "minio.env.j2"

HOSTILE = {
    "space and hash (was cut)": "abc #def123",
    "leading single quote (was exit 3)": "'abc",
    "single quotes": "it's 'quoted'",
    "double quotes": 'say "hi" "',
    "both quotes": "a'b\"c'\"d",
    "dollar": "$HOME ${PATH} $(id) $1 $$ $",
    "backtick": "`id` and `",
    "backslashes": "a\\b \\\\ \\n \\$ \\\" \\' \\` end\\",
    "equals": "a=b==c=",
    "non-ASCII": "\u00e9t\u00e9 \u4e2d\u6587 \U0001f511 nbsp\u00a0 nel\u0085 ls\u2028 ps\u2029 \ufffd",
    "leading and trailing blanks": "  \tpadded secret\t  ",
    "hash first": "#not-a-comment",
    "semicolon first": ";not-a-comment",
    "shell metacharacters": "a;b&c|d<e>f(g)h{i}j*k?l[m]n~o!p %h %i",
    "looks like an assignment": "export MINIO_ENDPOINT=http://evil:1",
    "control characters": "tab\tbell\x07esc\x1b[31mdel\x7fvt\x0bff\x0c",
    "minio-style secret": "lkDUt0Zq9/sEcR+eTWx7pLmN3vB8kJ2hGqY4uFa1",
    "empty": "",
}
UNWRITABLE = {"line feed": "Zq9x\nb", "carriage return": "Zq9x\rb", "NUL": "Zq9x\x00b", "byte order mark": "\ufeffZq9x",
              "noncharacter": "Zq9x\uffff", "lone surrogate": "Zq9x\ud800"}


# ------------------------------------------------------------------------------------------ the three readers
def read_with_parser(path):
    return parse_env_text(Path(path).read_text(encoding="utf-8"), str(path))


def read_with_shell(path, shell, names):
    """``set -a; . FILE`` in an empty environment, then each variable printed NUL-terminated."""
    script = 'set -a; . "$1" || exit 9; for n in %s; do eval "printf \'%%s\\0\' \\"\\$$n\\""; done' % " ".join(names)
    proc = subprocess.run([shell, "-c", script, "sh", str(path)], env={"PATH": os.defpath}, capture_output=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    return dict(zip(names, proc.stdout.decode("utf-8").split("\0")[:-1]))


_LIBSYSTEMD_SHARED = sorted(glob.glob("/usr/lib/*/systemd/libsystemd-shared-*.so")
                            + glob.glob("/usr/lib/systemd/libsystemd-shared-*.so")
                            + glob.glob("/lib/*/systemd/libsystemd-shared-*.so"))
_SYSTEMD_CHILD = r"""
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
strv = ctypes.POINTER(ctypes.c_char_p)
lib.load_env_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(strv)]
lib.load_env_file.restype = ctypes.c_int
lib.env_assignment_is_valid.argtypes = [ctypes.c_char_p]
lib.env_assignment_is_valid.restype = ctypes.c_bool
out = strv()
r = lib.load_env_file(None, sys.argv[2].encode(), ctypes.byref(out))
if r < 0:
    sys.exit("load_env_file failed: %d" % r)
values, i = {}, 0
while out and out[i] is not None:
    if lib.env_assignment_is_valid(out[i]):    # what EnvironmentFile= keeps (strv_env_clean_with_callback)
        key, _, value = out[i].decode("utf-8").partition("=")
        values[key] = value
    i += 1
json.dump(values, sys.stdout)
"""


def _systemd_library():
    """libsystemd-shared with the 3-argument load_env_file() (systemd 239 and later), or None."""
    for path in reversed(_LIBSYSTEMD_SHARED):
        match = re.search(r"libsystemd-shared-(\d+)", path)
        if match and int(match.group(1)) >= 239:
            return path
    return None


SYSTEMD_LIBRARY = _systemd_library()


def read_with_systemd_library(path):
    proc = subprocess.run([sys.executable, "-c", _SYSTEMD_CHILD, SYSTEMD_LIBRARY, str(path)], capture_output=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def read_with_systemd_rules(path):
    """EnvironmentFile= as documented in systemd.exec(5) (the state machine of systemd's env-file.c): lines end at
    \\n or \\r; ``#``/``;`` lines are comments; blanks around the key and the value are dropped; '...' is literal;
    in "..." a backslash keeps one of ``"\\`$``, is dropped before a newline and kept before anything else;
    unquoted, a backslash keeps the next character and quotes after the first character are literal."""
    text = Path(path).read_text(encoding="utf-8")
    values, i, n = {}, 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        if text[i] in "#;":
            while i < n and text[i] not in "\r\n":
                i += 1
            continue
        start = i
        while i < n and text[i] not in "=\r\n":
            i += 1
        if i >= n or text[i] != "=":
            continue                      # no "=": ignored
        key = text[start:i].strip(" \t")
        i += 1
        value, state, last_blank = [], "pre", None
        while i < n:
            c = text[i]
            i += 1
            if state == "pre":
                if c in "\r\n":
                    break
                if c == "'":
                    state = "single"
                elif c == '"':
                    state = "double"
                elif c == "\\":
                    state = "escape"
                elif c not in " \t":
                    state, last_blank = "value", None
                    value.append(c)
            elif state == "value":
                if c in "\r\n":
                    break
                if c == "\\":
                    state, last_blank = "escape", None
                else:
                    if c in " \t":
                        last_blank = len(value) if last_blank is None else last_blank
                    else:
                        last_blank = None
                    value.append(c)
            elif state == "escape":
                state = "value"
                if c != "\n":
                    value.append(c)
            elif state == "single":
                if c == "'":
                    state = "pre"
                else:
                    value.append(c)
            elif state == "double":
                if c == '"':
                    state = "pre"
                elif c == "\\":
                    state = "double-escape"
                else:
                    value.append(c)
            elif state == "double-escape":
                state = "double"
                if c in '"\\`$':
                    value.append(c)
                elif c != "\n":
                    value.extend(("\\", c))
        if state == "value" and last_blank is not None:
            del value[last_blank:]
        values[key] = "".join(value)
    return values


def read_with_systemd(path):
    return read_with_systemd_library(path) if SYSTEMD_LIBRARY else read_with_systemd_rules(path)


def shells():
    found = [s for s in ("bash", "dash") if shutil.which(s)]
    assert found, "no POSIX shell to check with"
    return found


# ------------------------------------------------------------------------------------------------- the template
def render(**overrides):
    variables = dict(
        ansible_managed="Ansible managed", comfyui_minio_endpoint="http://192.168.1.10:9000/",
        comfyui_minio_access_key="visionsuit", comfyui_minio_secret_key="secret", comfyui_minio_region="us-east-1",
        comfyui_minio_ca_bundle="", comfyui_minio_bucket_checkpoints="comfyui-checkpoints",
        comfyui_minio_bucket_loras="comfyui-loras", comfyui_minio_bucket_outputs="comfyui-outputs",
        comfyui_minio_checkpoints_prefix="", comfyui_minio_loras_prefix="", comfyui_minio_outputs_prefix="")
    variables.update(overrides)
    # the settings of ansible.builtin.template (trim_blocks, a kept final newline)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True,
                             autoescape=False)  # noqa: S701 - an env file, not HTML
    env.filters.update(CoreFilters().filters())
    env.tests.update(CoreTests().tests())
    for name, func in FilterModule().filters().items():
        env.filters["visionsuit.gpuworker." + name] = func
    return env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(variables), variables


def expected_values(variables):
    values = {
        "MINIO_ENDPOINT": re.sub("/$", "", variables["comfyui_minio_endpoint"]),
        "MINIO_SECURE": "true" if variables["comfyui_minio_endpoint"].startswith("https://") else "false",
    }
    for name in ("access_key", "secret_key", "region", "ca_bundle", "bucket_checkpoints", "bucket_loras",
                 "bucket_outputs", "checkpoints_prefix", "loras_prefix", "outputs_prefix"):
        if name != "ca_bundle" or variables["comfyui_minio_ca_bundle"]:
            values["MINIO_" + name.upper()] = variables["comfyui_minio_" + name]
    return values


def write_rendered(tmp_path, **overrides):
    text, variables = render(**overrides)
    path = tmp_path / "minio.env"
    path.write_text(text, encoding="utf-8")
    return path, expected_values(variables)


def check_readers(path, expected):
    assert read_with_parser(path) == expected
    for shell in shells():
        assert read_with_shell(path, shell, sorted(expected)) == expected, shell
    systemd = read_with_systemd(path)
    assert {k: systemd.get(k) for k in expected} == expected


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_template_secret_reads_back_exactly_in_all_three_readers(tmp_path, case):
    path, expected = write_rendered(tmp_path, comfyui_minio_secret_key=HOSTILE[case])
    check_readers(path, expected)
    # and the node commands' loader gets it (the endpoint and the required variables are fine)
    if HOSTILE[case]:  # an empty secret key is refused as "not set"
        assert load_minio_env(str(path), environ={})._secret_key == HOSTILE[case]


def test_every_template_value_is_quoted(tmp_path):
    hostile = sorted(HOSTILE.values())
    names = ("access_key", "region", "bucket_checkpoints", "bucket_loras", "bucket_outputs", "checkpoints_prefix",
             "loras_prefix", "outputs_prefix", "ca_bundle")
    overrides = {"comfyui_minio_" + name: hostile[i % len(hostile)] or "x" for i, name in enumerate(names)}
    overrides["comfyui_minio_ca_bundle"] = "/etc/ssl/my ca #1.pem"
    path, expected = write_rendered(tmp_path, comfyui_minio_endpoint="https://[fd00::1]:9000",
                                    comfyui_minio_secret_key=HOSTILE["both quotes"], **overrides)
    check_readers(path, expected)
    assert expected["MINIO_SECURE"] == "true" and "MINIO_CA_BUNDLE" in expected
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            assert re.match(r'^MINIO_[A-Z_]+="', line), line


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_unwritable_values_fail_without_showing_the_value(case):
    value = UNWRITABLE[case]
    with pytest.raises(GpuWorkerError) as e:
        quote_env_value(value, "MINIO_SECRET_KEY")
    assert "MINIO_SECRET_KEY" in str(e.value) and "Zq9x" not in str(e.value)
    with pytest.raises(AnsibleFilterError) as e:
        FilterModule().filters()["env_quote"](value, "MINIO_SECRET_KEY")
    assert "MINIO_SECRET_KEY" in str(e.value) and "Zq9x" not in str(e.value)
    with pytest.raises(AnsibleFilterError):
        render(comfyui_minio_secret_key=value)


# ---------------------------------------------------------------------------------- the one quoting rule itself
@pytest.mark.parametrize("value,quoted", [
    ("plain", '"plain"'),
    ("", '""'),
    (None, '""'),
    (9000, '"9000"'),
    ('a"b\\c$d`e', '"a\\"b\\\\c\\$d\\`e"'),
    ("it's #1", '"it\'s #1"'),
])
def test_quote_env_value(value, quoted):
    assert quote_env_value(value) == quoted
    assert FilterModule().filters()["env_quote"](value) == quoted


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_parser_reads_back_what_the_library_quotes(case):
    """The parser's side of the rule (no template): quote_env_value and parse_env_text are inverses."""
    value = HOSTILE[case]
    text = "# c\nexport MINIO_SECRET_KEY=%s\nOTHER=%s  # comment\n" % (quote_env_value(value), quote_env_value(value))
    assert parse_env_text(text) == {"MINIO_SECRET_KEY": value, "OTHER": value}


def test_parser_double_quote_escapes_follow_the_shell():
    # a backslash keeps one of \ " $ ` and is kept itself before anything else, as in sh and systemd
    assert parse_env_text('K="a\\"b\\\\c\\$d\\`e\\nf\\x"') == {"K": 'a"b\\c$d`e\\nf\\x'}
    assert parse_env_text("K='a\\\"b'") == {"K": 'a\\"b'}
    with pytest.raises(GpuWorkerError, match="unterminated"):
        parse_env_text('K="abc\\"')


def test_systemd_rules_reader_matches_the_real_parser(tmp_path):
    """The stand-in reader agrees with systemd's library on odd input (where the library is there)."""
    if not SYSTEMD_LIBRARY:
        pytest.skip("libsystemd-shared is not installed")
    path = tmp_path / "odd.env"
    path.write_text("; comment\n  A = plain value  \nB='x'y\"z\"\\q\nC=\"a\\qb\\\"c\" \n"
                    "D=it\\'s\nE=a\\\ncontinued\nno assignment\nF=\"multi\nline\"\nG=  'x'  \n", encoding="utf-8")
    assert read_with_systemd_rules(path) == read_with_systemd_library(path)
    for value in HOSTILE.values():
        path.write_text("K=%s\n" % quote_env_value(value), encoding="utf-8")
        assert read_with_systemd_rules(path) == read_with_systemd_library(path) == {"K": value}
