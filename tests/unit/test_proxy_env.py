# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""visionsuit_proxy_env (issue 14, "Proxy and mirrors"): the proxy_env / proxy_env_error filters that the roles'
install phases and preflights use, and the roles' wiring of them. The download through a real proxy runs in
tests/integration/test_proxy_downloads.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.visionsuit.gpuworker.plugins.filter.proxy import FilterModule

ROOT = Path(__file__).resolve().parents[2]
FILTERS = FilterModule().filters()
proxy_env, proxy_env_error = FILTERS["proxy_env"], FILTERS["proxy_env_error"]
SECRET = "http://user:s3cr3t-pw@proxy.corp:3128"


def test_empty_settings_set_nothing():
    assert proxy_env({}) == {} and proxy_env(None) == {} and proxy_env_error({}) == ""


def test_both_cases_and_no_proxy_merged_with_loopback_and_the_minio_host():
    env = proxy_env({"HTTP_PROXY": "http://proxy.corp:3128", "https_proxy": "http://proxy.corp:3128",
                     "no_proxy": "internal.example,10.0.0.0/8", "PIP_INDEX_URL": "https://pypi.corp/simple"},
                    "visionsuit_proxy_env", "http://192.168.1.10:9000")
    assert env["http_proxy"] == env["HTTP_PROXY"] == "http://proxy.corp:3128"
    assert env["https_proxy"] == env["HTTPS_PROXY"] == "http://proxy.corp:3128"
    assert env["no_proxy"] == env["NO_PROXY"] == "internal.example,10.0.0.0/8,127.0.0.1,localhost,::1,192.168.1.10"
    assert env["PIP_INDEX_URL"] == "https://pypi.corp/simple" and "pip_index_url" not in env


def test_no_proxy_as_a_list_keeps_the_operators_entries_once():
    env = proxy_env({"http_proxy": "http://p:3128", "no_proxy": ["localhost", ".corp.example"]})
    assert env["no_proxy"] == "localhost,.corp.example,127.0.0.1,::1"


@pytest.mark.parametrize("settings, fragment", [
    ({"ftp_proxy": "http://p:1"}, "unknown key 'ftp_proxy'"),
    ({"http_proxy": SECRET.replace("http://", "socks5://")}, "http_proxy must be a URL"),
    ({"https_proxy": SECRET + "/path"}, "https_proxy must be a URL"),
    ({"http_proxy": ""}, "http_proxy must be a URL"),
    ({"http_proxy": "http://p:1", "HTTP_PROXY": "http://p:1"}, "http_proxy is set twice"),
    ({"no_proxy": "a b"}, "no_proxy must be host names"),
    ({"PIP_INDEX_URL": "pypi.corp/simple"}, "PIP_INDEX_URL must be a URL"),
    ("http://p:3128", "must be a dict"),
])
def test_invalid_settings_name_the_variable_and_key_never_the_value(settings, fragment):
    error = proxy_env_error(settings, "comfyui_proxy_env (visionsuit_proxy_env)")
    assert error.startswith("comfyui_proxy_env (visionsuit_proxy_env)") and fragment in error, error
    assert "s3cr3t" not in error
    with pytest.raises(AnsibleFilterError) as raised:
        proxy_env(settings, "visionsuit_proxy_env")
    assert fragment in str(raised.value) and "s3cr3t" not in str(raised.value)


def test_a_proxy_url_with_credentials_is_accepted():
    assert proxy_env_error({"http_proxy": SECRET, "https_proxy": SECRET}) == ""


DOWNLOADING = {  # role -> the tasks files whose tasks download (apt, pip, git, get_url), by their main.yml entry
    "comfyui": ["Install"],
    "gpu_agent": ["Install"],
    "minio_helpers": ["Install"],
    "gpu_driver": ["Install the detection tools", "Install the driver stack"],
}


@pytest.mark.parametrize("role", sorted(DOWNLOADING))
def test_each_install_phase_runs_with_the_proxy_env(role):
    tasks = {t["name"]: t for t in yaml.safe_load((ROOT / "roles" / role / "tasks" / "main.yml").read_text())}
    for name in DOWNLOADING[role]:
        task = tasks[name]
        # a dynamic include passes its keywords to the included tasks only through apply
        env = (task.get("ansible.builtin.include_tasks", {}).get("apply") or task).get("environment", "")
        assert f"{role}_proxy_env | visionsuit.gpuworker.proxy_env(" in env, (role, name, env)
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    assert defaults[f"{role}_proxy_env"] == "{{ visionsuit_proxy_env | default({}) }}"
    # the proxy never reaches the service phases (their health checks, the drain) or the preflights
    for name, task in tasks.items():
        if name not in DOWNLOADING[role]:
            assert "environment" not in task, (role, name)
