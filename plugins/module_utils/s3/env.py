# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MinIO connection of a node: ``/etc/comfyui/minio.env`` plus environment overrides.

The file holds ``KEY=VALUE`` lines; blank lines and ``#`` comments are ignored, values may be quoted with
``'`` or ``"``, and an ``export `` prefix is tolerated (so the file can also be sourced by a shell).
Variables exported in the environment (``MINIO_BUCKET_LORAS=other sync-loras``) override the file.
The path of the file is ``$VISIONSUIT_MINIO_ENV`` when set.

Variables:

=========================== ============================================================================
``MINIO_ENDPOINT``          server URL, e.g. ``http://192.168.1.10:9000`` (required; a bare ``host:port``
                            uses ``MINIO_SECURE`` to pick http/https)
``MINIO_SECURE``            ``true``/``false``; derived from the endpoint's scheme when absent
``MINIO_ACCESS_KEY``        access key (required)
``MINIO_SECRET_KEY``        secret key (required; never printed)
``MINIO_REGION``            signing region, default ``us-east-1``
``MINIO_CA_BUNDLE``         PEM file of the CA that signed the server certificate (https only)
``MINIO_BUCKET_CHECKPOINTS`` bucket of the checkpoints (``sync-checkpoints``, ``generate-model-manifest``)
``MINIO_BUCKET_LORAS``      bucket of the LoRAs (``sync-loras``)
``MINIO_BUCKET_OUTPUTS``    bucket receiving the renders (``upload-outputs``)
``MINIO_CHECKPOINTS_PREFIX`` folder inside the checkpoints bucket (default: the whole bucket)
``MINIO_LORAS_PREFIX``      folder inside the LoRAs bucket (default: the whole bucket)
``MINIO_OUTPUTS_PREFIX``    folder inside the outputs bucket (default: the bucket root)
=========================== ============================================================================

A missing or unreadable file, a missing required variable or a malformed endpoint (the rule of :mod:`.endpoint`)
raise :class:`~.errors.GpuWorkerError` (exit code 3 in the node commands) naming the culprit and the fix.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ..errors import GpuWorkerError
from .client import DEFAULT_REGION, S3Client
from .endpoint import parse_endpoint as _parse_url
from .keys import normalize_prefix

DEFAULT_ENV_FILE = "/etc/comfyui/minio.env"
ENV_FILE_VARIABLE = "VISIONSUIT_MINIO_ENV"
CONFIG_EXIT_CODE = 3
KINDS = ("checkpoints", "loras", "outputs")
VARIABLES = (
    "MINIO_ENDPOINT", "MINIO_SECURE", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_REGION", "MINIO_CA_BUNDLE",
    "MINIO_BUCKET_CHECKPOINTS", "MINIO_BUCKET_LORAS", "MINIO_BUCKET_OUTPUTS",
    "MINIO_CHECKPOINTS_PREFIX", "MINIO_LORAS_PREFIX", "MINIO_OUTPUTS_PREFIX",
)
REQUIRED = ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")
_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _config_error(message, field=None, hint=None):
    return GpuWorkerError(message, field=field, hint=hint, exit_code=CONFIG_EXIT_CODE)


def env_file_path(path=None, environ=None):
    environ = os.environ if environ is None else environ
    return path or environ.get(ENV_FILE_VARIABLE) or DEFAULT_ENV_FILE


def _unquote(raw, path, lineno):
    value = raw.strip()
    if value[:1] in ("'", '"'):
        quote_char = value[0]
        end = value.find(quote_char, 1)
        if end < 0:
            raise _config_error("%s line %d: unterminated %s quote" % (path, lineno, quote_char),
                                hint="close the quote or remove it")
        inner = value[1:end]
        rest = value[end + 1:].strip()
        if rest and not rest.startswith("#"):
            raise _config_error("%s line %d: unexpected text after the quoted value" % (path, lineno),
                                hint="put one KEY=VALUE per line")
        if quote_char == '"':
            inner = inner.replace('\\"', '"').replace("\\\\", "\\")
        return inner
    # unquoted: an inline comment starts at " #"
    hash_pos = value.find(" #")
    if hash_pos >= 0:
        value = value[:hash_pos]
    return value.strip()


def parse_env_text(text, path="<text>"):
    """Parse ``KEY=VALUE`` lines into a dict (later lines win)."""
    values = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(stripped)
        if not match:
            raise _config_error("%s line %d is not KEY=VALUE: %r" % (path, lineno, _redact(stripped)),
                                hint="write one KEY=VALUE per line, # starts a comment")
        values[match.group(1)] = _unquote(match.group(2), path, lineno)
    return values


def _redact(line):
    name = line.split("=", 1)[0]
    return name + "=..." if "=" in line else (line[:40] + "..." if len(line) > 40 else line)


def read_env_file(path):
    """Read and parse one env file; GpuWorkerError when missing, unreadable or malformed."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise _config_error("MinIO settings file %s does not exist" % path, field=ENV_FILE_VARIABLE,
                            hint="create it with MINIO_ENDPOINT, MINIO_ACCESS_KEY and MINIO_SECRET_KEY "
                                 "(the minio_helpers role writes it) or point %s at it" % ENV_FILE_VARIABLE)
    except IsADirectoryError:
        raise _config_error("MinIO settings file %s is a directory" % path, field=ENV_FILE_VARIABLE,
                            hint="point %s at the minio.env file" % ENV_FILE_VARIABLE)
    except PermissionError:
        raise _config_error("MinIO settings file %s is not readable by this user" % path, field=ENV_FILE_VARIABLE,
                            hint="run as root or as a member of the file's group (it is mode 0640)")
    except OSError as err:
        raise _config_error("cannot read MinIO settings file %s: %s" % (path, err.strerror or err),
                            field=ENV_FILE_VARIABLE)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _config_error("MinIO settings file %s is not UTF-8 text" % path, field=ENV_FILE_VARIABLE)
    return parse_env_text(text, path)


def parse_bool(value, name):
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _config_error("%s must be true or false, not %r" % (name, value), field=name)


def parse_endpoint(endpoint, secure=None, name="MINIO_ENDPOINT"):
    """Normalise an endpoint to ``(url, secure)`` by the rule of :mod:`.endpoint`; a bare ``host:port`` uses
    ``secure`` (default http), and ``secure`` must not contradict an explicit scheme."""
    parsed = _parse_url(endpoint, field=name, hint="use e.g. %s=http://192.168.1.10:9000" % name,
                        default_scheme="https" if secure else "http", exit_code=CONFIG_EXIT_CODE)
    if secure is not None and secure != parsed.secure:
        raise _config_error("MINIO_SECURE=%s contradicts the %s scheme of %s" % (
            "true" if secure else "false", parsed.scheme, name), field="MINIO_SECURE",
            hint="drop MINIO_SECURE or make it match the endpoint's scheme")
    return parsed.url, parsed.secure


class MinioSettings:
    """The resolved connection and bucket settings of a node (the secret is kept out of ``repr``)."""

    def __init__(self, values, source=None):
        self.values = dict(values)
        self.source = source
        secure_raw = self.values.get("MINIO_SECURE")
        secure = parse_bool(secure_raw, "MINIO_SECURE") if secure_raw not in (None, "") else None
        for name in REQUIRED:
            if not self.values.get(name):
                where = "in %s or the environment" % source if source else "in the environment"
                raise _config_error("%s is not set %s" % (name, where), field=name,
                                    hint="add %s=... to %s" % (name, source or DEFAULT_ENV_FILE))
        self.endpoint, self.secure = parse_endpoint(self.values["MINIO_ENDPOINT"], secure)
        self.access_key = self.values["MINIO_ACCESS_KEY"]
        self._secret_key = self.values["MINIO_SECRET_KEY"]
        self.region = self.values.get("MINIO_REGION") or DEFAULT_REGION
        self.ca_bundle = self.values.get("MINIO_CA_BUNDLE") or None
        if self.ca_bundle and not os.path.isfile(self.ca_bundle):
            raise _config_error("MINIO_CA_BUNDLE %s does not exist" % self.ca_bundle, field="MINIO_CA_BUNDLE",
                                hint="point it at the PEM file of the CA that signed the MinIO certificate")

    def __repr__(self):
        return "MinioSettings(endpoint=%r, access_key=%r, source=%r)" % (self.endpoint, self.access_key, self.source)

    def bucket(self, kind):
        name = "MINIO_BUCKET_%s" % kind.upper()
        value = (self.values.get(name) or "").strip()
        if not value:
            raise _config_error("%s is not set" % name, field=name,
                                hint="add %s=<bucket> to %s or export it" % (name, self.source or DEFAULT_ENV_FILE))
        return value

    def prefix(self, kind):
        return normalize_prefix(self.values.get("MINIO_%s_PREFIX" % kind.upper()))

    def client(self, **kwargs):
        return S3Client(self.endpoint, self.access_key, self._secret_key, region=self.region,
                        ca_bundle=self.ca_bundle, **kwargs)


def load_minio_env(path=None, environ=None):
    """Resolve the settings: the file (``path``, ``$VISIONSUIT_MINIO_ENV`` or the default) overridden by the
    environment. The file may be absent only when the environment alone provides the required variables."""
    environ = os.environ if environ is None else environ
    path = env_file_path(path, environ)
    overrides = {k: environ[k] for k in VARIABLES if environ.get(k) not in (None, "")}
    try:
        values = read_env_file(path)
    except GpuWorkerError:
        if all(overrides.get(k) for k in REQUIRED):
            values = {}
        else:
            raise
    values.update(overrides)
    return MinioSettings(values, source=path)


# The connection options of the modules (documented once in plugins/doc_fragments/minio.py).
CONNECTION_ARGUMENT_SPEC = dict(
    endpoint=dict(type="str"),
    access_key=dict(type="str", no_log=False),
    secret_key=dict(type="str", no_log=True),
    region=dict(type="str"),
    ca_bundle=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    env_file=dict(type="path"),
)


def client_from_module_params(params, **client_kwargs):
    """An :class:`S3Client` from the CONNECTION_ARGUMENT_SPEC options of a module's params."""
    return connection_from_options(**dict((name, params[name]) for name in CONNECTION_ARGUMENT_SPEC),
                                   **client_kwargs)


def connection_from_options(endpoint=None, access_key=None, secret_key=None, region=None, ca_bundle=None,
                            validate_certs=True, env_file=None, **client_kwargs):
    """An :class:`S3Client` from module options, or from ``env_file`` when no endpoint is given."""
    if endpoint:
        url, _secure = parse_endpoint(endpoint, name="endpoint")
        missing = [n for n, v in (("access_key", access_key), ("secret_key", secret_key)) if not v]
        if missing:
            raise GpuWorkerError("%s required when endpoint is given" % " and ".join(missing), field=missing[0],
                                 hint="pass access_key and secret_key, or drop endpoint to use env_file")
        return S3Client(url, access_key, secret_key, region=region or DEFAULT_REGION, ca_bundle=ca_bundle,
                        validate_certs=validate_certs, **client_kwargs)
    settings = load_minio_env(env_file or DEFAULT_ENV_FILE, environ={})
    if access_key:
        settings.access_key = access_key
    if secret_key:
        settings._secret_key = secret_key
    if region:
        settings.region = region
    if ca_bundle:
        settings.ca_bundle = ca_bundle
    return settings.client(validate_certs=validate_certs, **client_kwargs)
