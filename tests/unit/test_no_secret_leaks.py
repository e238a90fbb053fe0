# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""No secret is ever printed: every error path of minio.env (the library's parser and the node commands that use
it) and of the GPU agent's configuration (YAML and JSON parser errors included) is run with a known secret on
the offending line, and the secret (or any 5-character piece of it) must appear in no message, no stdout/stderr
of a node command and no log record of the agent."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig.leaks import SECRET, leaked
from visionsuit_gpu_agent import config as agent_config
from visionsuit_gpu_agent import main as agent_main
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3.env import CONFIG_EXIT_CODE, load_minio_env

# SECRET (rig/leaks.py) and an agent token; random enough that no 5-character piece occurs in a message by chance.
TOKEN = "tok-Vq8Rz3KwYp2Ls7Dn5HjXc4Mb"
BIN = Path(sys.executable).parent  # the console scripts installed beside the venv's interpreter


def assert_no_leak(text, secret=SECRET):
    piece = leaked(text, secret)
    assert piece is None, f"secret piece {piece!r} printed in: {text}"


# ------------------------------------------------------------------------------------------------- minio.env
HEAD = "# node settings\nMINIO_ENDPOINT=http://127.0.0.1:9\n"       # lines 1-2
TAIL = "MINIO_ACCESS_KEY=visionsuit\nMINIO_BUCKET_CHECKPOINTS=ck\n"
# name -> (file text, line number the message must name or None, key name the message must carry or None)
ENV_CASES = {
    "no '=' after the key": (HEAD + f"MINIO_SECRET_KEY {SECRET}\n" + TAIL, 3, "MINIO_SECRET_KEY"),
    "no '=', export form": (HEAD + f"export MINIO_SECRET_KEY  {SECRET}\n" + TAIL, 3, "MINIO_SECRET_KEY"),
    "colon instead of '='": (HEAD + f"MINIO_SECRET_KEY: {SECRET}\n" + TAIL, 3, "MINIO_SECRET_KEY"),
    "no '=', quoted value": (HEAD + f'MINIO_SECRET_KEY "{SECRET}"\n' + TAIL, 3, "MINIO_SECRET_KEY"),
    "'=' inside the secret, none after the key": (
        HEAD + f"MINIO_SECRET_KEY {SECRET[:20]}={SECRET[20:]}\n" + TAIL, 3, "MINIO_SECRET_KEY"),
    "the secret alone on a line": (HEAD + f"{SECRET}\n" + TAIL, 3, None),
    "the secret alone, with '='": (HEAD + f"{SECRET[:20]}={SECRET[20:]} x\n" + TAIL, 3, None),
    "invalid key name": (HEAD + f"MINIO-SECRET-KEY={SECRET}\n" + TAIL, 3, None),
    "words around '='": (HEAD + f"MINIO SECRET KEY = {SECRET}\n" + TAIL, 3, None),
    "unterminated double quote": (HEAD + f'MINIO_SECRET_KEY="{SECRET}\n' + TAIL, 3, "MINIO_SECRET_KEY"),
    "unterminated single quote": (HEAD + f"MINIO_SECRET_KEY='{SECRET}\n" + TAIL, 3, "MINIO_SECRET_KEY"),
    "escaped closing quote": (HEAD + f'MINIO_SECRET_KEY="{SECRET}\\"\n' + TAIL, 3, "MINIO_SECRET_KEY"),
    "text after the quoted value": (HEAD + f'MINIO_SECRET_KEY="{SECRET[:20]}" {SECRET[20:]}\n' + TAIL, 3,
                                    "MINIO_SECRET_KEY"),
    "two assignments on the MINIO_SECURE line": (
        HEAD + f"MINIO_SECURE=maybe MINIO_SECRET_KEY={SECRET}\n" + TAIL + "MINIO_SECRET_KEY=x\n", None,
        "MINIO_SECURE"),
    "two assignments on the MINIO_ENDPOINT line": (
        f"MINIO_ENDPOINT=http://127.0.0.1:9 MINIO_SECRET_KEY={SECRET}\nMINIO_SECRET_KEY=x\n" + TAIL, None,
        "MINIO_ENDPOINT"),
    "credentials in the endpoint URL": (
        f"MINIO_ENDPOINT=http://visionsuit:{SECRET}@127.0.0.1:9\nMINIO_SECRET_KEY=x\n" + TAIL, None,
        "MINIO_ENDPOINT"),
    "two assignments on the MINIO_CA_BUNDLE line": (
        "MINIO_ENDPOINT=https://127.0.0.1:9\n" + f"MINIO_CA_BUNDLE=/nonexistent/ca.pem MINIO_SECRET_KEY={SECRET}\n"
        + "MINIO_SECRET_KEY=x\n" + TAIL, None, "MINIO_CA_BUNDLE"),
    "required variable missing": (HEAD + f"MINIO_SECRET_KEY={SECRET}\nMINIO_BUCKET_CHECKPOINTS=ck\n", None,
                                  "MINIO_ACCESS_KEY"),
}


def write(tmp_path, text, name="minio.env"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(path)


def _error_text(err):
    return " ".join(map(str, (err, repr(err), err.message, err.field, err.hint, err.details, err.args)))


@pytest.mark.parametrize("case", sorted(ENV_CASES))
def test_env_parser_errors_name_file_line_and_key_but_never_the_secret(tmp_path, case):
    text, line, key = ENV_CASES[case]
    path = write(tmp_path, text)
    with pytest.raises(GpuWorkerError) as e:
        load_minio_env(path, environ={})
    assert_no_leak(_error_text(e.value))
    message = str(e.value)
    assert e.value.exit_code == CONFIG_EXIT_CODE
    if line:
        assert path in message and f"line {line}" in message, message
    if key:
        assert key in message, message


def test_env_file_that_is_not_utf8(tmp_path):
    path = write(tmp_path, HEAD.encode() + b"MINIO_SECRET_KEY=" + SECRET.encode() + b"\xff\xfe\n")
    with pytest.raises(GpuWorkerError) as e:
        load_minio_env(path, environ={})
    assert_no_leak(_error_text(e.value))
    assert path in str(e.value) and "UTF-8" in str(e.value)


def test_bucket_and_scheme_errors_after_a_good_file(tmp_path):
    path = write(tmp_path, HEAD + f"MINIO_SECRET_KEY={SECRET}\nMINIO_ACCESS_KEY=a\n")
    settings = load_minio_env(path, environ={})
    with pytest.raises(GpuWorkerError) as e:
        settings.bucket("loras")
    assert_no_leak(_error_text(e.value))
    with pytest.raises(GpuWorkerError) as e:
        load_minio_env(path, environ={"MINIO_SECURE": "true"})
    assert_no_leak(_error_text(e.value))
    assert_no_leak(repr(settings))


# ------------------------------------------------------------------------------------------- node commands
NODE_COMMANDS = {
    "sync-checkpoints": [],
    "sync-loras": [],
    "upload-outputs": ["--source", "{tmp}"],
    "generate-model-manifest": [],
    "test-create-buckets": [],
    "test-upload-models": ["--models", "{tmp}"],
    "test-export-outputs": ["{tmp}/export"],
    "test-run-workflow": ["--workflow", "{tmp}/wf.json", "--export-dir", "{tmp}/export", "--url",
                          "http://127.0.0.1:9", "--timeout", "1"],
}


def run_node(tmp_path, command, env_file):
    (tmp_path / "wf.json").write_text('{"1": {"class_type": "SaveImage", "inputs": {}}}')
    args = [a.format(tmp=tmp_path) for a in NODE_COMMANDS[command]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}
    env.update(VISIONSUIT_MINIO_ENV=env_file, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(BIN / command), *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("command", sorted(NODE_COMMANDS))
def test_every_node_command_keeps_a_malformed_line_secret(tmp_path, command):
    """The defect as reported: `MINIO_SECRET_KEY <secret>` made every command print the start of the secret."""
    path = write(tmp_path, ENV_CASES["no '=' after the key"][0])
    proc = run_node(tmp_path, command, path)
    assert_no_leak(proc.stdout + proc.stderr)
    assert "line 3" in proc.stderr and "MINIO_SECRET_KEY" in proc.stderr, proc.stderr
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", sorted(ENV_CASES))
def test_node_command_errors_never_print_the_secret(tmp_path, case):
    text, line, key = ENV_CASES[case]
    proc = run_node(tmp_path, "sync-checkpoints", write(tmp_path, text))
    assert_no_leak(proc.stdout + proc.stderr)
    assert proc.returncode == CONFIG_EXIT_CODE and proc.stderr.count("\n") == 1, proc.stderr
    if line:
        assert f"line {line}" in proc.stderr, proc.stderr
    if key:
        assert key in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------ the GPU agent
GOOD_AGENT = "minio:\n  endpoint: http://127.0.0.1:9000\n  access_key: a\n  secret_key: s\n"
# name -> (config text, line number the message must name or None, key the message must carry or None)
AGENT_CASES = {
    "text after the quoted token (the report)": (f'server:\n  api_token: "{TOKEN}" x\n' + GOOD_AGENT, 2,
                                                 "server.api_token"),
    "text after the single-quoted token": (f"server:\n  api_token: '{TOKEN}' x\n" + GOOD_AGENT, 2,
                                           "server.api_token"),
    "unterminated quote": (GOOD_AGENT + f'server:\n  api_token: "{TOKEN}\n', 6, "server.api_token"),
    "colon in the token": (f"server:\n  api_token: {TOKEN[:10]}: {TOKEN[10:]}\n" + GOOD_AGENT, 2,
                           "server.api_token"),
    "unknown escape in the token": (f'server:\n  api_token: "{TOKEN}\\q{TOKEN}"\n' + GOOD_AGENT, 2,
                                    "server.api_token"),
    "tab indentation": (f"server:\n\tapi_token: {TOKEN}\n" + GOOD_AGENT, 2, None),
    "token used as an alias": (f"server:\n  api_token: *{TOKEN}\n" + GOOD_AGENT, 2, "server.api_token"),
    "token used as a tag": (f"server:\n  api_token: !{TOKEN} x\n" + GOOD_AGENT, 2, "server.api_token"),
    "token used as a duplicate anchor": (
        f"server:\n  api_token: &{TOKEN} a\n  listen: &{TOKEN} b\n" + GOOD_AGENT, 3, "server.listen"),
    "missing colon on the secret line": (f"minio:\n  endpoint: http://h:9000\n  secret_key {SECRET}\n  x: 1\n",
                                         None, None),
    "control character in the token": (f'server:\n  api_token: "{TOKEN}\x07"\n' + GOOD_AGENT, 2, None),
    "flow mapping with garbage": (f'{{"server": {{"api_token": "{TOKEN}" x}}}}\n', 1, "server.api_token"),
    "token pasted as a key": (f"server:\n  api_token {TOKEN}:\n" + GOOD_AGENT, None, None),
    "token of the wrong type": (f"server:\n  api_token: [{TOKEN}]\n" + GOOD_AGENT, None, "server.api_token"),
    "token too short": ("server:\n  api_token: tok-Vq8Rz3Kw\n" + GOOD_AGENT, None, "server.api_token"),
    "token at the top level": (f"api_token: {TOKEN}\n" + GOOD_AGENT, None, "api_token"),
    "section given as a string": (f'server: "api_token: {TOKEN}"\n' + GOOD_AGENT, None, "server"),
    "secret key of the wrong type": (f"server:\n  api_token: {TOKEN}\nminio:\n  secret_key: {{k: {SECRET}}}\n",
                                     None, "minio.secret_key"),
}
JSON_CASES = {
    "json: text after the token": (f'{{"server": {{"api_token": "{TOKEN}" x}}}}', 1, "server.api_token"),
    "json: bad escape in the token": (f'{{"server": {{"api_token": "{TOKEN}\\q{TOKEN}"}}}}', 1,
                                      "server.api_token"),
    "json: unterminated token": (f'{{\n "server": {{\n  "api_token": "{TOKEN}\n', 3, "server.api_token"),
    "json: control character in the token": (f'{{"server": {{"api_token": "{TOKEN}\x07"}}}}', 1,
                                              "server.api_token"),
}


def _check_agent(tmp_path, text, line, key, caplog, capsys):
    path = write(tmp_path, text, "config.yaml")
    with pytest.raises(agent_config.ConfigError) as e:
        agent_config.load(path)
    problems = "\n".join(e.value.problems)
    for secret in (TOKEN, SECRET):
        assert_no_leak(problems + str(e.value), secret)
    if line:
        assert f"line {line}" in problems, problems
    if key:
        assert key in problems, problems
    # --check-config and the start-up log
    out, err = io.StringIO(), io.StringIO()
    assert agent_main.check_config(path, out=out, err=err) == 1
    with caplog.at_level(logging.DEBUG):
        assert agent_main.main(["--config", path]) == 1
    captured = capsys.readouterr()
    for secret in (TOKEN, SECRET):
        for text_out in (out.getvalue(), err.getvalue(), caplog.text, captured.out, captured.err):
            assert_no_leak(text_out, secret)
    assert caplog.records and path in caplog.text
    return problems


@pytest.mark.parametrize("case", sorted(AGENT_CASES))
def test_agent_config_errors_never_print_the_token(tmp_path, case, caplog, capsys):
    if agent_config.yaml is None:  # pragma: no cover - the test venv has PyYAML
        pytest.skip("PyYAML is not installed")
    _check_agent(tmp_path, *AGENT_CASES[case], caplog, capsys)


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_agent_json_config_errors_never_print_the_token(tmp_path, case, caplog, capsys, monkeypatch):
    monkeypatch.setattr(agent_config, "yaml", None)   # the JSON fallback of a node without PyYAML
    problems = _check_agent(tmp_path, *JSON_CASES[case], caplog, capsys)
    assert "not valid JSON" in problems


def test_agent_config_that_is_not_utf8(tmp_path, caplog, capsys):
    text = b"server:\n  api_token: " + TOKEN.encode() + b"\xff\n"
    path = write(tmp_path, text, "config.yaml")
    with pytest.raises(agent_config.ConfigError) as e:
        agent_config.load(path)
    assert_no_leak(str(e.value), TOKEN)
    assert path in str(e.value) and "UTF-8" in str(e.value)


# ------------------------------------------------------------------------ the GPU agent's minio.env_file
# The agent reads the node's minio.env (config.yaml: minio.env_file) with the same parser: every malformed file
# above, and values the agent refuses, with the secret on the offending line. The problem names the env file and
# the variable; --check-config and the start-up log print no piece of the secret.
ENV_TAIL = "MINIO_ACCESS_KEY=visionsuit\nMINIO_BUCKET_CHECKPOINTS=checkpoints\n"
AGENT_ENV_CASES = {
    "endpoint running into the secret's assignment": (
        f"MINIO_ENDPOINT=http://127.0.0.1:9 MINIO_SECRET_KEY={SECRET}\nMINIO_SECRET_KEY=x\n" + ENV_TAIL,
        "MINIO_ENDPOINT"),
    "credentials in the endpoint URL": (
        f"MINIO_ENDPOINT=http://visionsuit:{SECRET}@127.0.0.1:9\nMINIO_SECRET_KEY=x\n" + ENV_TAIL, "MINIO_ENDPOINT"),
    "secret as the endpoint's scheme": (
        f"MINIO_ENDPOINT={SECRET[:8]}://127.0.0.1:9\nMINIO_SECRET_KEY=x\n" + ENV_TAIL, "MINIO_ENDPOINT"),
    "secret as an IPv6 address": (
        f"MINIO_ENDPOINT=http://[{SECRET[:8]}]:9\nMINIO_SECRET_KEY=x\n" + ENV_TAIL, "MINIO_ENDPOINT"),
    "secret as a bucket": (HEAD + "MINIO_SECRET_KEY=x\n" + ENV_TAIL + f"MINIO_BUCKET_LORAS={SECRET}\n",
                           "MINIO_BUCKET_LORAS"),
    "CA bundle running into the secret's assignment": (
        f"MINIO_ENDPOINT=https://127.0.0.1:9\nMINIO_CA_BUNDLE=/nonexistent/ca.pem MINIO_SECRET_KEY={SECRET}\n"
        "MINIO_SECRET_KEY=x\n" + ENV_TAIL, "MINIO_CA_BUNDLE"),
    "secret as a relative CA bundle": (HEAD + f"MINIO_SECRET_KEY=x\nMINIO_CA_BUNDLE={SECRET}\n" + ENV_TAIL,
                                       "MINIO_CA_BUNDLE"),
    "secret key missing": (HEAD + ENV_TAIL, "MINIO_SECRET_KEY"),
}


def _agent_env_config(tmp_path, env_text, minio_yaml=""):
    env_path = write(tmp_path, env_text)
    return env_path, f"server:\n  api_token: {TOKEN}\nminio:\n  env_file: {env_path}\n{minio_yaml}"


@pytest.mark.parametrize("case", sorted(ENV_CASES))
def test_agent_env_file_parser_errors_never_print_the_secret(tmp_path, case, caplog, capsys):
    text, line, _key = ENV_CASES[case]
    env_path, config_text = _agent_env_config(tmp_path, text)
    problems = _check_agent(tmp_path, config_text, None, None, caplog, capsys)
    assert env_path in problems, problems
    if line:   # a malformed line: named by its number, never shown
        assert f"{env_path} line {line}" in problems, problems


@pytest.mark.parametrize("case", sorted(AGENT_ENV_CASES))
def test_agent_env_file_values_it_refuses_never_print_the_secret(tmp_path, case, caplog, capsys):
    text, variable = AGENT_ENV_CASES[case]
    env_path, config_text = _agent_env_config(tmp_path, text)
    problems = _check_agent(tmp_path, config_text, None, f"minio.env_file ({env_path}) {variable}: ", caplog, capsys)
    assert len(problems.splitlines()) == 1, problems


def test_agent_secret_in_both_config_and_env_file_is_named_not_shown(tmp_path, caplog, capsys):
    env_path, config_text = _agent_env_config(tmp_path, HEAD + f"MINIO_SECRET_KEY={SECRET}\n" + ENV_TAIL,
                                              f"  secret_key: {SECRET}\n")
    problems = _check_agent(tmp_path, config_text, None, "minio.secret_key: is set here and in minio.env_file",
                            caplog, capsys)
    assert env_path in problems and "MINIO_SECRET_KEY" in problems


def test_agent_env_file_that_is_not_utf8(tmp_path, caplog, capsys):
    env_path, config_text = _agent_env_config(
        tmp_path, HEAD.encode() + b"MINIO_SECRET_KEY=" + SECRET.encode() + b"\xff\xfe\n")
    problems = _check_agent(tmp_path, config_text, None, f"minio.env_file: {env_path} is not UTF-8", caplog, capsys)
    assert len(problems.splitlines()) == 1
