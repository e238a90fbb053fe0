# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one S3 endpoint rule (visionsuit_gpuworker.s3.endpoint) and every place that uses it.

The cases cover what each former copy of the rule accepted or refused: the roles' preflight regex
``^https?://[^/]+/?$``, the playbook's ``^https?://[^/\\s]+/?$``, minio.env's parser, the S3 client and the agent's
config check. The places that take an endpoint must give the library's verdict, and no role, playbook or library
file may carry its own endpoint regex again.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ansible_collections.visionsuit.gpuworker.plugins.filter.endpoint import FilterModule
from visionsuit_gpu_agent import config as agent_config
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3 import env
from visionsuit_gpuworker.s3.client import S3Client
from visionsuit_gpuworker.s3.endpoint import Endpoint, parse_endpoint, redact

ROOT = Path(__file__).resolve().parents[2]

# value -> (url, secure, host, port, Host header)
ACCEPTED = {
    "http://192.168.1.10:9000": ("http://192.168.1.10:9000", False, "192.168.1.10", 9000, "192.168.1.10:9000"),
    "https://minio.lan": ("https://minio.lan", True, "minio.lan", 443, "minio.lan"),
    "https://minio.lan/": ("https://minio.lan", True, "minio.lan", 443, "minio.lan"),        # trailing / (all)
    "http://MinIO.LAN:9000": ("http://minio.lan:9000", False, "minio.lan", 9000, "minio.lan:9000"),
    "http://h:80": ("http://h:80", False, "h", 80, "h"),
    "https://h:9443/": ("https://h:9443", True, "h", 9443, "h:9443"),
    "http://[fd00::1]:9000": ("http://[fd00::1]:9000", False, "fd00::1", 9000, "[fd00::1]:9000"),
    "http://[FD00::1]": ("http://[fd00::1]", False, "fd00::1", 80, "[fd00::1]"),
    "http://minio_1.internal:9000": ("http://minio_1.internal:9000", False, "minio_1.internal", 9000,
                                     "minio_1.internal:9000"),
}

# value -> a fragment of the reason
REFUSED = {
    "": "is empty",
    "   ": "is empty",
    "ftp://h:9000": "only http and https",                  # every place refused it
    "s3://bucket": "only http and https",
    "HTTP://h:9000": "lowercase",                           # the regexes refused it (the templates test ^https://)
    "h:9000": "no scheme",                                  # client, agent, regexes refused it
    "192.168.1.10": "no scheme",
    "http:/h:9000": "no scheme",
    "http://": "no valid host",
    "http://:9000": "no valid host",
    "http://h:99999": "invalid port",
    "http://h:notaport": "invalid port",                    # the regexes accepted it
    "http://h:0": "invalid port",
    "http://h:+80": "invalid port",
    "http://h:9000/bucket": "path",
    "http://h:9000//": "path",
    "http://h:9000?x=1": "path or query",                   # the roles' regex and the agent accepted it
    "http://h:9000?": "path or query",
    "http://h:9000#frag": "path or query",
    "http://user:pw@h:9000": "no valid host",               # the regexes, the client and the agent accepted it
    "http://@h:9000": "no valid host",
    "http://h :9000": "whitespace",                         # the roles' regex accepted it
    " http://h:9000": "whitespace",
    "http://h:9000\n": "whitespace",
    "http://h\x00:9000": "control character",
    "http://[fd00::1": "not a valid URL",
    "http://[nonsense]:9000": "invalid IPv6 address",
    "http://[fd00::1]x": "invalid port",
    "http://fd00::1:9000": "brackets",
}


@pytest.mark.parametrize("value", sorted(ACCEPTED))
def test_accepted(value):
    ep = parse_endpoint(value)
    assert isinstance(ep, Endpoint)
    assert (ep.url, ep.secure, ep.host, ep.port, ep.host_header) == ACCEPTED[value]
    assert ep.scheme == ("https" if ep.secure else "http")


@pytest.mark.parametrize("value", sorted(REFUSED))
def test_refused_with_field_reason_and_fix(value):
    with pytest.raises(GpuWorkerError) as e:
        parse_endpoint(value, field="my_endpoint")
    err = e.value
    text = str(err)
    assert REFUSED[value] in err.details["reason"] and REFUSED[value] in text
    assert err.field == "my_endpoint" and text.startswith("my_endpoint ")
    assert err.hint and "http://HOST:PORT" in text                     # the fix
    assert "\n" not in text                                           # one line (the value is shown escaped)
    assert "pw" not in text


def test_bare_host_takes_the_default_scheme_and_errors_carry_hint_and_exit_code():
    assert parse_endpoint("h:9000", default_scheme="https") == ("https://h:9000", "https", "h", 9000, True)
    assert parse_endpoint("http://h:9000", default_scheme="https").url == "http://h:9000"
    with pytest.raises(GpuWorkerError) as e:
        parse_endpoint("ftp://h", field="X", hint="do this", exit_code=3)
    assert (e.value.exit_code, e.value.hint) == (3, "do this") and str(e.value).endswith("(do this)")


def test_redact_masks_credentials():
    assert redact("http://user:secret@h:9000") == "http://***@h:9000"
    assert redact("user:secret@h:9000") == "***@h:9000"
    assert redact("http://u:p/ss@h") == "http://***@h"
    assert redact("http://h:9000") == "http://h:9000" and redact(None) == ""


# ------------------------------------------------------------------------------------------ every place, one verdict
def _library_error(value, field):
    try:
        parse_endpoint(value, field=field)
    except GpuWorkerError as err:
        return str(err)
    return ""


ALL_CASES = sorted(ACCEPTED) + sorted(REFUSED)


@pytest.mark.parametrize("value", ALL_CASES)
def test_filter_gives_the_library_verdict(value):
    flt = FilterModule().filters()["minio_endpoint_error"]
    assert flt(value, "comfyui_minio_endpoint") == _library_error(value, "comfyui_minio_endpoint")
    assert flt(value) == _library_error(value, "endpoint")
    assert (flt(value) == "") == (value in ACCEPTED)


@pytest.mark.parametrize("value", ALL_CASES)
def test_client_env_and_agent_give_the_library_verdict(value):
    ok = value in ACCEPTED
    # the S3 client
    if ok:
        c = S3Client(value, "a", "b")
        assert (c.secure, c.host, c.port, c.host_header) == ACCEPTED[value][1:]
        assert c.endpoint == ("https://" if c.secure else "http://") + c.host_header
    else:
        with pytest.raises(GpuWorkerError) as e:
            S3Client(value, "a", "b")
        assert str(e.value) == _library_error(value, "endpoint")
    # minio.env and the modules' endpoint= option (connection_from_options): the same rule, plus the documented
    # bare host:port of minio.env (MINIO_SECURE picks the scheme, http when unset)
    try:
        expected = parse_endpoint(value, default_scheme="http")
    except GpuWorkerError as err:
        expected = err
    if isinstance(expected, Endpoint):
        assert env.parse_endpoint(value) == (expected.url, expected.secure)
        assert env.connection_from_options(endpoint=value, access_key="a", secret_key="b").host == expected.host
    else:
        with pytest.raises(GpuWorkerError) as e:
            env.parse_endpoint(value)
        assert e.value.details["reason"] == expected.details["reason"] and "MINIO_ENDPOINT" in str(e.value)
        assert e.value.exit_code == env.CONFIG_EXIT_CODE and "pw" not in str(e.value)
        if value:  # an empty endpoint= means "use env_file"
            with pytest.raises(GpuWorkerError) as e:
                env.connection_from_options(endpoint=value, access_key="a", secret_key="b")
            assert e.value.details["reason"] == expected.details["reason"]
    assert ok == (isinstance(expected, Endpoint) and "://" in value)
    # the GPU agent's config
    doc = {"server": {"api_token": "t" * 16}, "minio": {"endpoint": value, "access_key": "a", "secret_key": "s"}}
    if ok:
        assert agent_config.check(doc)["minio.endpoint"] == value
    else:
        with pytest.raises(agent_config.ConfigError) as e:
            agent_config.check(doc)
        problems = [p for p in e.value.problems if p.startswith("minio.endpoint: ")]
        assert len(problems) == 1, e.value.problems
        reason = REFUSED[value] if value else "is required"
        assert reason in problems[0] and "pw" not in problems[0]
        if value:
            assert "http://HOST:PORT" in problems[0]   # the fix


# ------------------------------------------------------------------------------------------ no copy of the rule left
_REGEX_TEST = re.compile(r"\b(?:is\s+(?:match|search|regex)\s*\(|regex_search\s*\(|regex_findall\s*\()")
_URL_REGEX = re.compile(r"https\?|https\{0,1\}|http\[s\]|\(https?\|https?\)")
_URL_PARSE = re.compile(r"\burl(?:split|parse)\s*\(")
# Template lines that derive a value from an endpoint the preflight already checked (same result as the rule:
# the scheme is lowercase and the value has no whitespace, so ^https:// is the secure flag); they are not checks.
_TEMPLATE_DERIVATIONS = {
    ("roles/comfyui/templates/minio.env.j2",
     "MINIO_SECURE={{ 'true' if comfyui_minio_endpoint is match('^https://') else 'false' }}"),
}


def _files(*patterns):
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file() and not any(part in (".venv", "build", ".build") for part in path.parts):
                yield path


def test_no_role_playbook_or_library_file_carries_its_own_endpoint_regex():
    offenders = []
    for path in _files("roles/**/*.yml", "roles/**/*.yaml", "roles/**/*.j2", "playbooks/**/*.yml",
                       "playbooks/**/*.yaml"):
        rel = path.relative_to(ROOT).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if (rel, line.strip()) in _TEMPLATE_DERIVATIONS:
                continue
            if _URL_REGEX.search(line) or ("endpoint" in line and _REGEX_TEST.search(line)):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    for path in _files("plugins/**/*.py", "agent/visionsuit_gpu_agent/**/*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "plugins/module_utils/s3/endpoint.py":
            continue
        text = path.read_text(encoding="utf-8")
        if "endpoint" not in text.lower():
            continue  # e.g. the PyTorch index URL check of gpu/: not an endpoint
        for n, line in enumerate(text.splitlines(), 1):
            if _URL_REGEX.search(line) or (_URL_PARSE.search(line) and (
                    "endpoint" in line or rel.startswith("plugins/module_utils/s3/"))):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == [], "endpoint checks outside plugins/module_utils/s3/endpoint.py:\n" + "\n".join(offenders)


def test_every_former_place_uses_the_one_rule():
    for rel, needle in (("roles/comfyui/tasks/preflight.yml", "visionsuit.gpuworker.minio_endpoint_error"),
                        ("roles/gpu_agent/tasks/preflight.yml", "visionsuit.gpuworker.minio_endpoint_error"),
                        ("playbooks/provision.yml", "visionsuit.gpuworker.minio_endpoint_error"),
                        ("plugins/module_utils/s3/env.py", "from .endpoint import parse_endpoint"),
                        ("plugins/module_utils/s3/client.py", "from .endpoint import parse_endpoint"),
                        ("agent/visionsuit_gpu_agent/config.py",
                         "from visionsuit_gpuworker.s3.endpoint import parse_endpoint")):
        assert needle in (ROOT / rel).read_text(encoding="utf-8"), rel
