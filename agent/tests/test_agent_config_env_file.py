# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""GPU agent: the MinIO connection read from the node's env file (``minio.env_file``, normally
``/etc/comfyui/minio.env``), with the parser the node commands use (``visionsuit_gpuworker.s3.env``).

One source of the credentials per node: config.yaml names the file, the file gives endpoint, keys, region, CA
bundle, buckets and outputs prefix. A problem about a value of the file names the file and the variable and never
the value; a key given in both places is a problem; a file that cannot be read is one line naming it and the fix.
"""
from __future__ import annotations

import builtins
import io
import json
import logging

import pytest

from rig.leaks import SECRET, leaked
from visionsuit_gpu_agent import config
from visionsuit_gpu_agent import main as agent_main
from visionsuit_gpuworker.s3.env import quote_env_value

TOKEN = "tok-Vq8Rz3KwYp2Ls7Dn5HjXc4Mb"

# What the comfyui role's template writes (roles/comfyui/templates/minio.env.j2): every value double-quoted.
GOOD_ENV = {
    "MINIO_ENDPOINT": "http://192.168.1.10:9000",
    "MINIO_SECURE": "false",
    "MINIO_ACCESS_KEY": "visionsuit",
    "MINIO_SECRET_KEY": SECRET,
    "MINIO_REGION": "eu-central-1",
    "MINIO_BUCKET_CHECKPOINTS": "ckpt-bucket",
    "MINIO_BUCKET_LORAS": "lora-bucket",
    "MINIO_BUCKET_OUTPUTS": "out-bucket",
    "MINIO_CHECKPOINTS_PREFIX": "base/",
    "MINIO_LORAS_PREFIX": "styles/",
    "MINIO_OUTPUTS_PREFIX": "renders",
}


def write_env(tmp_path, values=None, text=None, name="minio.env"):
    path = tmp_path / name
    if text is None:
        values = GOOD_ENV if values is None else values
        text = "# Ansible managed\n" + "".join(f"{k}={quote_env_value(v, k)}\n" for k, v in values.items())
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(path)


def doc_for(env_file, **minio):
    return {"server": {"api_token": TOKEN}, "minio": dict({"env_file": env_file}, **minio)}


def problems_of(doc):
    with pytest.raises(config.ConfigError) as caught:
        config.check(doc)
    text = "\n".join(caught.value.problems) + str(caught.value)
    assert leaked(text) is None, text
    assert TOKEN not in text
    return caught.value.problems


# ------------------------------------------------------------------------------------------------- happy path
def test_the_connection_comes_from_the_env_file(tmp_path):
    path = write_env(tmp_path)
    cfg = config.check(doc_for(path))
    assert cfg.section("minio") == {
        "env_file": path, "endpoint": "http://192.168.1.10:9000", "access_key": "visionsuit", "secret_key": SECRET,
        "region": "eu-central-1", "ca_bundle": "", "validate_certs": True, "bucket_checkpoints": "ckpt-bucket",
        "bucket_loras": "lora-bucket", "bucket_outputs": "out-bucket", "outputs_prefix": "renders", "retries": 3,
        "backoff": 0.5, "timeout": 60.0, "workers": 4, "transfer_nice": 10}
    assert cfg.redacted()["minio.secret_key"] == "<redacted>"


def test_tuning_keys_stay_in_the_yaml_beside_the_env_file(tmp_path):
    cfg = config.check(doc_for(write_env(tmp_path), retries=5, timeout=12, validate_certs=False, workers=2))
    assert (cfg["minio.retries"], cfg["minio.timeout"], cfg["minio.validate_certs"], cfg["minio.workers"]) == (
        5, 12.0, False, 2)


def test_absent_or_empty_variables_take_the_defaults(tmp_path):
    values = {k: v for k, v in GOOD_ENV.items() if not k.startswith("MINIO_BUCKET_")}
    values.update(MINIO_REGION="", MINIO_OUTPUTS_PREFIX="")
    cfg = config.check(doc_for(write_env(tmp_path, values)))
    assert (cfg["minio.region"], cfg["minio.bucket_checkpoints"], cfg["minio.bucket_loras"],
            cfg["minio.bucket_outputs"], cfg["minio.outputs_prefix"], cfg["minio.ca_bundle"]) == (
        "us-east-1", "comfyui-checkpoints", "comfyui-loras", "comfyui-outputs", "", "")


def test_the_env_file_forms_the_node_commands_accept(tmp_path):
    """Comments, export, single quotes, unquoted values with an inline comment: the library's parser."""
    text = ("# comment\n\nexport MINIO_ENDPOINT=https://minio.lan:9443  # the store\n"
            f"MINIO_ACCESS_KEY='visionsuit'\nMINIO_SECRET_KEY=\"{SECRET}\"\n")
    cfg = config.check(doc_for(write_env(tmp_path, text=text)))
    assert (cfg["minio.endpoint"], cfg["minio.access_key"], cfg["minio.secret_key"]) == (
        "https://minio.lan:9443", "visionsuit", SECRET)


def test_a_ca_bundle_from_the_env_file(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = config.check(doc_for(write_env(tmp_path, dict(GOOD_ENV, MINIO_CA_BUNDLE=str(ca)))))
    assert cfg["minio.ca_bundle"] == str(ca)


def test_a_key_the_env_file_lacks_may_be_given_in_the_yaml(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = config.check(doc_for(write_env(tmp_path), ca_bundle=str(ca)))
    assert cfg["minio.ca_bundle"] == str(ca)


def test_without_env_file_the_yaml_keys_work_as_before():
    cfg = config.check({"server": {"api_token": TOKEN},
                        "minio": {"endpoint": "http://h:9000", "access_key": "a", "secret_key": "s"}})
    assert cfg["minio.env_file"] == "" and cfg["minio.secret_key"] == "s"


def test_the_file_is_read_when_loaded_only(tmp_path):
    """Read once, at start (and by --check-config): a later change of the file needs a restart."""
    path = write_env(tmp_path)
    cfg = config.check(doc_for(path))
    write_env(tmp_path, dict(GOOD_ENV, MINIO_ACCESS_KEY="rotated"))
    assert cfg["minio.access_key"] == "visionsuit"
    assert config.check(doc_for(path))["minio.access_key"] == "rotated"


# ---------------------------------------------------------------------------------------------- problems
def test_a_key_both_here_and_in_the_env_file_is_a_problem(tmp_path):
    path = write_env(tmp_path)
    problems = problems_of(doc_for(path, access_key="other", secret_key=SECRET, outputs_prefix="x"))
    assert problems == [
        f"minio.access_key: is set here and in minio.env_file ({path}, as MINIO_ACCESS_KEY); keep one",
        f"minio.secret_key: is set here and in minio.env_file ({path}, as MINIO_SECRET_KEY); keep one",
        f"minio.outputs_prefix: is set here and in minio.env_file ({path}, as MINIO_OUTPUTS_PREFIX); keep one",
    ]


def test_a_key_left_empty_in_the_yaml_is_not_given_twice(tmp_path):
    cfg = config.check(doc_for(write_env(tmp_path), access_key=None, region=None))
    assert (cfg["minio.access_key"], cfg["minio.region"]) == ("visionsuit", "eu-central-1")


def test_missing_file_is_one_line_naming_the_file_and_the_fix(tmp_path):
    path = str(tmp_path / "nowhere" / "minio.env")
    problems = problems_of(doc_for(path))
    assert problems == [f"minio.env_file: {path} does not exist (the gpu_agent and comfyui roles write it from "
                        "visionsuit_minio_* or comfyui_minio_*: run the role, or point minio.env_file at the "
                        "node's minio.env)"]


def test_unreadable_file_is_one_line_naming_the_file_and_the_fix(tmp_path, monkeypatch):
    path = write_env(tmp_path)
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):   # the tests may run as root, who reads any file
        if str(file) == path:
            raise PermissionError(13, "Permission denied", path)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    problems = problems_of(doc_for(path))
    assert len(problems) == 1 and problems[0].startswith(f"minio.env_file: {path} is not readable by this user")
    assert "file's group" in problems[0] and "root:comfyui 0640" in problems[0]


@pytest.mark.parametrize("case", ["directory", "not utf-8", "too large"])
def test_other_unusable_files(tmp_path, case):
    if case == "directory":
        path, fragment = str(tmp_path), "is not a regular file"
    elif case == "not utf-8":
        path, fragment = write_env(tmp_path, text=f"MINIO_SECRET_KEY={SECRET}\xff".encode("latin-1")), "UTF-8"
    else:
        path, fragment = write_env(tmp_path, text="#" * (config.ENV_FILE_MAX_BYTES + 1)), "larger than 1 MiB"
    problems = problems_of(doc_for(path))
    assert len(problems) == 1 and problems[0].startswith(f"minio.env_file: {path}") and fragment in problems[0]


def test_a_malformed_line_names_the_line_and_variable_never_the_text(tmp_path):
    path = write_env(tmp_path, text=f"MINIO_ENDPOINT=http://h:9000\nMINIO_SECRET_KEY {SECRET}\n")
    problems = problems_of(doc_for(path))
    assert problems == [f"minio.env_file: {path} line 2 is not KEY=VALUE: MINIO_SECRET_KEY is not followed by '=' "
                        "(write MINIO_SECRET_KEY=VALUE; the line is not shown as it may hold a secret)"]


def test_a_relative_env_file_is_one_problem(tmp_path):
    assert problems_of(doc_for("etc/comfyui/minio.env")) == [
        "minio.env_file: must be an absolute path (got 'etc/comfyui/minio.env')"]
    assert problems_of(doc_for(["/etc/comfyui/minio.env"])) == [
        "minio.env_file: must be a string, got ['/etc/comfyui/minio.env']"]


def test_bad_values_name_the_file_and_the_variable_but_no_value(tmp_path):
    values = dict(GOOD_ENV, MINIO_ENDPOINT=f"ftp{SECRET[:6]}://h:9000", MINIO_ACCESS_KEY="", MINIO_SECRET_KEY="",
                  MINIO_BUCKET_LORAS=f"Bad_{SECRET[:10]}", MINIO_CA_BUNDLE=f"relative/{SECRET}")
    path = write_env(tmp_path, values)
    where = f"minio.env_file ({path})"
    assert problems_of(doc_for(path)) == [
        f"{where} MINIO_ENDPOINT: has scheme '...'; only http and https are supported (use http://HOST:PORT "
        "or https://HOST:PORT, e.g. http://192.168.1.10:9000)",
        f"{where} MINIO_ACCESS_KEY: is required",
        f"{where} MINIO_SECRET_KEY: is required",
        f"{where} MINIO_CA_BUNDLE: must be an absolute path",
        f"{where} MINIO_BUCKET_LORAS: is not a valid bucket name (3-63 lowercase letters, digits, dots, hyphens)",
    ]


@pytest.mark.parametrize("endpoint", [
    f"{SECRET[:8]}://h:9000", f"HTTP{SECRET[:8]}://h:9000", f"http://[{SECRET[:8]}]:9000", f"http://u:{SECRET}@h:1",
    f"http://h:9000/{SECRET}", f"http://h:{SECRET[:5]}", f"http://h {SECRET}", f"{SECRET}", f"http://{SECRET}:x:1",
    f"http://[::1]{SECRET[:6]}", f"ftp://{SECRET}", f"htTp://{SECRET}",
])
def test_a_bad_endpoint_never_shows_a_piece_of_itself(tmp_path, endpoint):
    path = write_env(tmp_path, dict(GOOD_ENV, MINIO_ENDPOINT=endpoint))
    problems = problems_of(doc_for(path))
    assert len(problems) == 1 and problems[0].startswith(f"minio.env_file ({path}) MINIO_ENDPOINT: "), problems


def test_a_missing_ca_bundle_names_the_variable_not_the_path(tmp_path):
    path = write_env(tmp_path, dict(GOOD_ENV, MINIO_CA_BUNDLE=f"/etc/ssl/{SECRET}.pem"))
    assert problems_of(doc_for(path)) == [f"minio.env_file ({path}) MINIO_CA_BUNDLE: names a file that does not exist"]


def test_the_secret_of_the_env_file_in_every_variable_never_appears(tmp_path):
    """The secret pasted into each variable of the file (a shifted line, a copy-paste slip): no problem shows it."""
    for name in GOOD_ENV:
        for value in (SECRET, f"{SECRET} x", f"x {SECRET}", f"http://{SECRET}", f"/{SECRET}", f"{SECRET}/"):
            path = write_env(tmp_path, dict(GOOD_ENV, **{name: value}))
            try:
                config.check(doc_for(path))
            except config.ConfigError as err:
                text = "\n".join(err.problems)
                assert leaked(text) is None, (name, value, text)


# ------------------------------------------------------------------------------- --check-config and the start
def test_check_config_reads_the_env_file(tmp_path, caplog, capsys):
    env_path = write_env(tmp_path)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(doc_for(env_path)))
    out, err = io.StringIO(), io.StringIO()
    assert agent_main.check_config(str(config_path), out=out, err=err) == 0, err.getvalue()
    assert f"MinIO http://192.168.1.10:9000 from {env_path}" in out.getvalue()
    assert leaked(out.getvalue() + err.getvalue()) is None

    write_env(tmp_path, dict(GOOD_ENV, MINIO_SECRET_KEY="", MINIO_ENDPOINT=f"http://h:9000/{SECRET}"))
    out, err = io.StringIO(), io.StringIO()
    assert agent_main.check_config(str(config_path), out=out, err=err) == 1
    assert f"{config_path}: minio.env_file ({env_path}) MINIO_SECRET_KEY: is required\n" in err.getvalue()
    assert f"{config_path}: minio.env_file ({env_path}) MINIO_ENDPOINT: must not contain a path" in err.getvalue()
    with caplog.at_level(logging.DEBUG):
        assert agent_main.main(["--config", str(config_path)]) == 1
    captured = capsys.readouterr()
    for text in (out.getvalue(), err.getvalue(), caplog.text, captured.out, captured.err):
        assert leaked(text) is None, text
    assert "MINIO_SECRET_KEY: is required" in caplog.text

    (tmp_path / "minio.env").unlink()
    out, err = io.StringIO(), io.StringIO()
    assert agent_main.check_config(str(config_path), out=out, err=err) == 1
    assert err.getvalue().splitlines()[0] == (
        f"{config_path}: minio.env_file: {env_path} does not exist (the gpu_agent and comfyui roles write it from "
        "visionsuit_minio_* or comfyui_minio_*: run the role, or point minio.env_file at the node's minio.env)")
