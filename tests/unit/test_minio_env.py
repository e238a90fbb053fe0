# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""minio.env parsing, environment overrides and the error messages of bad settings."""
import os

import pytest

from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3.env import (
    CONFIG_EXIT_CODE,
    connection_from_options,
    load_minio_env,
    parse_endpoint,
    parse_env_text,
)

SECRET = "s3cr3t-VALUE-xyz"
GOOD = f"""# VisionSuit MinIO settings
export MINIO_ENDPOINT="http://192.168.1.10:9000"
MINIO_ACCESS_KEY='visionsuit'
MINIO_SECRET_KEY={SECRET}   # inline comment
MINIO_BUCKET_CHECKPOINTS=checkpoints
MINIO_BUCKET_LORAS = loras
MINIO_BUCKET_OUTPUTS=outputs
MINIO_CHECKPOINTS_PREFIX=/sdxl/
"""


def write(tmp_path, text, name="minio.env"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_parses_quotes_comments_export_and_inline_comments():
    values = parse_env_text(GOOD + 'QUOTED="a # not a comment"\nEMPTY=\n')
    assert values["MINIO_ENDPOINT"] == "http://192.168.1.10:9000"
    assert values["MINIO_ACCESS_KEY"] == "visionsuit"
    assert values["MINIO_SECRET_KEY"] == SECRET
    assert values["MINIO_BUCKET_LORAS"] == "loras"
    assert values["QUOTED"] == "a # not a comment"
    assert values["EMPTY"] == ""


def test_settings_from_file(tmp_path):
    s = load_minio_env(write(tmp_path, GOOD), environ={})
    assert (s.endpoint, s.secure, s.access_key, s.region) == ("http://192.168.1.10:9000", False, "visionsuit",
                                                              "us-east-1")
    assert s.bucket("checkpoints") == "checkpoints" and s.prefix("checkpoints") == "sdxl"
    assert s.prefix("loras") == "" and s.bucket("outputs") == "outputs"
    assert SECRET not in repr(s) and SECRET not in repr(s.client())


def test_environment_overrides_the_file_and_names_the_file(tmp_path):
    path = write(tmp_path, GOOD)
    s = load_minio_env(environ={"VISIONSUIT_MINIO_ENV": path, "MINIO_BUCKET_LORAS": "other",
                                "MINIO_REGION": "eu-central-1", "UNRELATED": "x"})
    assert s.bucket("loras") == "other" and s.region == "eu-central-1" and s.source == path


def test_environment_alone_is_enough(tmp_path):
    s = load_minio_env(str(tmp_path / "absent.env"), environ={
        "MINIO_ENDPOINT": "minio.lan:9000", "MINIO_SECURE": "true", "MINIO_ACCESS_KEY": "a",
        "MINIO_SECRET_KEY": "b"})
    assert s.endpoint == "https://minio.lan:9000" and s.secure


def test_missing_file_is_named_with_the_fix(tmp_path):
    path = str(tmp_path / "nope.env")
    with pytest.raises(GpuWorkerError) as e:
        load_minio_env(path, environ={})
    assert path in str(e.value) and "does not exist" in str(e.value) and "MINIO_ENDPOINT" in str(e.value)
    assert e.value.exit_code == CONFIG_EXIT_CODE


def test_unreadable_file(tmp_path):
    with pytest.raises(GpuWorkerError) as e:
        load_minio_env(str(tmp_path), environ={})  # a directory cannot be read as a file
    assert str(tmp_path) in str(e.value)
    if os.geteuid() != 0:
        p = write(tmp_path, GOOD)
        os.chmod(p, 0)
        with pytest.raises(GpuWorkerError) as e:
            load_minio_env(p, environ={})
        assert "not readable" in str(e.value)


@pytest.mark.parametrize("missing", ["MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"])
def test_missing_required_key(tmp_path, missing):
    text = "\n".join(line for line in GOOD.splitlines() if missing not in line)
    with pytest.raises(GpuWorkerError) as e:
        load_minio_env(write(tmp_path, text), environ={})
    assert missing in str(e.value) and "minio.env" in str(e.value)
    assert SECRET not in str(e.value)


def test_missing_bucket_variable(tmp_path):
    s = load_minio_env(write(tmp_path, "MINIO_ENDPOINT=http://h:9000\nMINIO_ACCESS_KEY=a\nMINIO_SECRET_KEY=b\n"),
                       environ={})
    with pytest.raises(GpuWorkerError) as e:
        s.bucket("loras")
    assert "MINIO_BUCKET_LORAS is not set" in str(e.value)


def test_malformed_line_is_reported_without_its_value(tmp_path):
    with pytest.raises(GpuWorkerError) as e:
        load_minio_env(write(tmp_path, GOOD + f"this is not an assignment {SECRET}\n"), environ={})
    assert "line 9" in str(e.value) and SECRET not in str(e.value)
    with pytest.raises(GpuWorkerError) as e:
        parse_env_text('MINIO_SECRET_KEY="unterminated\n')
    assert "unterminated" in str(e.value)


@pytest.mark.parametrize("endpoint,fragment", [
    ("ftp://h:9000", "scheme"),
    ("http://h:99999", "invalid port"),
    ("http://h:9000/bucket", "path"),
    ("http://user:pw@h:9000", "no valid host"),
    ("http://", "no valid host"),
    ("", "empty"),
])
def test_bad_endpoint_urls(endpoint, fragment):
    with pytest.raises(GpuWorkerError) as e:
        parse_endpoint(endpoint)
    assert fragment in str(e.value) and "MINIO_ENDPOINT" in str(e.value)
    assert "pw" not in str(e.value)


def test_secure_flag_derivation_and_conflict():
    assert parse_endpoint("https://h") == ("https://h", True)
    assert parse_endpoint("h:9000", secure=False) == ("http://h:9000", False)
    with pytest.raises(GpuWorkerError) as e:
        parse_endpoint("http://h:9000", secure=True)
    assert "MINIO_SECURE" in str(e.value)
    with pytest.raises(GpuWorkerError):
        load_minio_env("/nonexistent", environ={"MINIO_ENDPOINT": "http://h", "MINIO_ACCESS_KEY": "a",
                                                "MINIO_SECRET_KEY": "b", "MINIO_SECURE": "maybe"})


def test_module_connection_options(tmp_path):
    c = connection_from_options(endpoint="http://127.0.0.1:9000", access_key="a", secret_key=SECRET)
    assert c.endpoint == "http://127.0.0.1:9000"
    with pytest.raises(GpuWorkerError) as e:
        connection_from_options(endpoint="http://127.0.0.1:9000", access_key="a")
    assert "secret_key" in str(e.value)
    c = connection_from_options(env_file=write(tmp_path, GOOD), secret_key="override")
    assert c.endpoint == "http://192.168.1.10:9000"
