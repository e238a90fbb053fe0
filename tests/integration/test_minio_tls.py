# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""https to a real MinIO (``--certs-dir``) with a private CA: the CA bundle option of the client, the env file and the
node commands; an unknown CA is refused with the documented message."""
from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig.minio_server import MinioServer
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3.client import S3Client
from visionsuit_gpuworker.s3.download import download
from visionsuit_gpuworker.s3.upload import upload

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A MinIO serving https with a certificate for 127.0.0.1 signed by a private CA; yields (server, ca.pem)."""
    d = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert = _ca("visionsuit test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    certs = d / "certs"
    certs.mkdir()
    (certs / "public.crt").write_bytes(_pem(cert))
    (certs / "private.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    ca = d / "ca.pem"
    ca.write_bytes(_pem(ca_cert))
    other = d / "other-ca.pem"
    other.write_bytes(_pem(_ca("some other CA")[1]))
    srv = MinioServer.start(certs_dir=str(certs), ca_file=str(ca))
    try:
        yield srv, ca, other
    finally:
        srv.stop()


def test_sync_over_https_with_the_ca_bundle(tls, tmp_path):
    srv, ca, _other = tls
    assert srv.endpoint.startswith("https://127.0.0.1:")
    client = S3Client(srv.endpoint, srv.access_key, srv.secret_key, ca_bundle=str(ca))
    client.create_bucket("tls-up")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    up = upload(client, "tls-up", "m", str(src), multipart_threshold=1024 * 1024, part_size=1024 * 1024)
    assert up["files"] == 1
    down = download(client, "tls-up", "m", str(tmp_path / "dst"), multipart_threshold=1024 * 1024,
                    part_size=1024 * 1024)
    assert down["files"] == 1
    assert (tmp_path / "dst" / "sub" / "model.safetensors").read_bytes() == \
        (src / "sub" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("bundle", [None, "other"])
def test_unknown_ca_is_refused_with_the_fix(tls, bundle):
    srv, _ca_pem, other = tls
    client = S3Client(srv.endpoint, srv.access_key, srv.secret_key,
                      ca_bundle=str(other) if bundle else None)
    with pytest.raises(GpuWorkerError) as exc:
        client.bucket_exists("tls-up")
    err = exc.value
    assert "TLS certificate of %s could not be verified" % srv.endpoint in str(err)
    assert err.field == "ca_bundle" and "MINIO_CA_BUNDLE" in (err.hint or "")
    assert srv.secret_key not in str(err)


def _node_env(tmp_path, srv, extra):
    env_file = tmp_path / "minio.env"
    env_file.write_text(f"MINIO_ENDPOINT={srv.endpoint}\nMINIO_ACCESS_KEY={srv.access_key}\n"
                        f"MINIO_SECRET_KEY={srv.secret_key}\nMINIO_BUCKET_CHECKPOINTS=tls-ck\n"
                        f"MINIO_BUCKET_LORAS=tls-lo\nMINIO_BUCKET_OUTPUTS=tls-out\n{extra}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}
    env.update(VISIONSUIT_MINIO_ENV=str(env_file), PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(env, *argv):
    proc = subprocess.run([sys.executable, str(Path(sys.executable).parent / argv[0]), *argv[1:]], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    return proc


def test_node_commands_read_the_ca_bundle_from_the_env_file(tls, tmp_path):
    srv, ca, _other = tls
    env = _node_env(tmp_path, srv, f"MINIO_SECURE=true\nMINIO_CA_BUNDLE={ca}\n")
    proc = _run(env, "test-create-buckets")
    assert proc.returncode == 0, proc.stderr
    models = tmp_path / "models"
    models.mkdir()
    (models / "base.safetensors").write_bytes(b"\0" * 4096)
    loras = tmp_path / "loras"
    loras.mkdir()
    proc = _run(env, "test-upload-models", "--models", str(models), "--loras", str(loras))
    assert proc.returncode == 0, proc.stderr
    proc = _run(env, "sync-checkpoints", "--dest", str(tmp_path / "ck"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ck" / "base.safetensors").read_bytes() == b"\0" * 4096
    for out in (proc.stdout, proc.stderr):
        assert srv.secret_key not in out


def test_node_command_without_the_ca_says_which_setting_fixes_it(tls, tmp_path):
    srv, _ca_pem, _other = tls
    proc = _run(_node_env(tmp_path, srv, ""), "sync-checkpoints", "--dest", str(tmp_path / "ck"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "could not be verified" in proc.stderr and "MINIO_CA_BUNDLE" in proc.stderr, proc.stderr
    assert srv.secret_key not in proc.stdout + proc.stderr
    missing = tmp_path / "nope.pem"
    other_node = tmp_path / "other-node"
    other_node.mkdir()
    proc = _run(_node_env(other_node, srv, f"MINIO_CA_BUNDLE={missing}\n"), "sync-checkpoints",
                "--dest", str(tmp_path / "ck"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"MINIO_CA_BUNDLE {missing} does not exist" in proc.stderr, proc.stderr
