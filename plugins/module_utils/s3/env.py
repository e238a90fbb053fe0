# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The MinIO connection of a node: ``/etc/comfyui/minio.env`` plus environment overrides.

The file holds ``KEY=VALUE`` lines; blank lines and ``#`` comments are ignored, values may be quoted with
``'`` or ``"``, and an ``export `` prefix is tolerated (so the file can also be sourced by a shell).
Variables exported in the environment (``MINIO_BUCKET_LORAS=other sync-loras``) override the file.
The path of the file is ``$VISIONSUIT_MINIO_ENV`` when set.

Quoting (:func:`quote_env_value`, the filter ``visionsuit.gpuworker.env_quote`` of the template that writes the
file): every value is written in double quotes, with ``\\``, ``"``, ``$`` and backtick escaped by a backslash.
Three readers then see exactly the value given: this parser, systemd's ``EnvironmentFile=`` (a unit may load the
file; in double quotes a backslash keeps any of these four characters and nothing else, see systemd.exec(5)) and
a POSIX shell's ``.`` (the same double-quote rule). Single quotes would not do: systemd has no ``'\\''`` idiom.
Values holding a line break, NUL, U+FEFF or a Unicode noncharacter cannot be written (systemd refuses them).

Errors name the file, the line and the variable, never the text of a line: any line may hold the secret key.

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

from ..errors import EXIT_CONFIG, GpuWorkerError
from .client import DEFAULT_REGION, S3Client
from .endpoint import parse_endpoint as _parse_url
from .keys import normalize_prefix

DEFAULT_ENV_FILE = "/etc/comfyui/minio.env"
ENV_FILE_VARIABLE = "VISIONSUIT_MINIO_ENV"
CONFIG_EXIT_CODE = EXIT_CONFIG  # 3 in the one exit code table (..errors.EXIT_CODES)
KINDS = ("checkpoints", "loras", "outputs")
VARIABLES = (
    "MINIO_ENDPOINT", "MINIO_SECURE", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_REGION", "MINIO_CA_BUNDLE",
    "MINIO_BUCKET_CHECKPOINTS", "MINIO_BUCKET_LORAS", "MINIO_BUCKET_OUTPUTS",
    "MINIO_CHECKPOINTS_PREFIX", "MINIO_LORAS_PREFIX", "MINIO_OUTPUTS_PREFIX",
)
REQUIRED = ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")
_LINE = re.compile(r"^(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=(.*)$")
_LEADING_NAME = re.compile(r"^(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)")
# Line breaks of systemd's env-file parser (and of the shell, for \n); Python's splitlines() would also break
# a value at U+0085, U+2028, form feed and others, which the other readers keep.
_NEWLINE = re.compile(r"\r\n|\r|\n")
_BLANKS = " \t"
_DOUBLE_QUOTE_ESCAPES = '\\"$`'   # inside "...": a backslash keeps one of these (POSIX shell, systemd)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _config_error(message, field=None, hint=None):
    return GpuWorkerError(message, field=field, hint=hint, exit_code=CONFIG_EXIT_CODE)


def env_file_path(path=None, environ=None):
    environ = os.environ if environ is None else environ
    return path or environ.get(ENV_FILE_VARIABLE) or DEFAULT_ENV_FILE


def _unwritable(text):
    """What keeps ``text`` out of an env file (a phrase), or None."""
    for char in text:
        code = ord(char)
        if char in "\r\n":
            return "a line break"
        if code == 0:
            return "a NUL character"
        if code == 0xFEFF:
            return "a byte order mark (U+FEFF)"
        if 0xD800 <= code <= 0xDFFF:
            return "a lone surrogate (not UTF-8)"
        if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
            return "a Unicode noncharacter"
    return None


def quote_env_value(value, name="value"):
    """``value`` as the right-hand side of a ``KEY=VALUE`` line of ``minio.env``: in double quotes, with
    backslash, double quote, ``$`` and backtick escaped by a backslash. :func:`parse_env_text`, systemd's
    ``EnvironmentFile=`` and a POSIX shell's ``.`` all read it back as ``value`` (None is written as ``""``).

    GpuWorkerError (naming ``name``, never the value) when the value holds a line break, NUL, U+FEFF or a
    Unicode noncharacter, which one of the readers cannot take.
    """
    text = "" if value is None else value if isinstance(value, str) else str(value)
    why = _unwritable(text)
    if why:
        raise GpuWorkerError("%s cannot be written to an environment file: it contains %s" % (name, why),
                             field=name, hint="the value is not shown; remove that character from it")
    return '"%s"' % "".join("\\" + c if c in _DOUBLE_QUOTE_ESCAPES else c for c in text)


def _shown_name(name):
    """A variable name fit for a message: one of :data:`VARIABLES`, else None (the text at the start of a
    malformed line may be the start of a secret)."""
    return name if name in VARIABLES else None


def _where(path, lineno, name):
    return "%s line %d%s" % (path, lineno, " (%s)" % name if name else "")


def _unquote(raw, path, lineno, name=None):
    """The value of one line. Quoted values follow the shell: '...' is literal, in "..." a backslash keeps one of
    ``\\ " $ `` ` (and is kept itself before any other character); text after the closing quote may only be a
    ``#`` comment. Unquoted values are stripped and end at `` #``. Errors never quote the line."""
    shown = _shown_name(name)
    value = raw.strip(_BLANKS)
    quote_char = value[:1]
    if quote_char not in ("'", '"'):
        # unquoted: an inline comment starts at " #"
        hash_pos = value.find(" #")
        if hash_pos >= 0:
            value = value[:hash_pos]
        return value.strip(_BLANKS)
    chars = []
    pos = 1
    while True:
        if pos >= len(value):
            raise _config_error("%s: unterminated %s quote" % (_where(path, lineno, shown), quote_char),
                                field=shown, hint="close the quote on the same line; the line is not shown as "
                                                  "it may hold a secret")
        char = value[pos]
        if char == quote_char:
            break
        if quote_char == '"' and char == "\\" and pos + 1 < len(value) and value[pos + 1] in _DOUBLE_QUOTE_ESCAPES:
            pos += 1
            char = value[pos]
        chars.append(char)
        pos += 1
    rest = value[pos + 1:].strip(_BLANKS)
    if rest and not rest.startswith("#"):
        raise _config_error("%s: unexpected text after the quoted value" % _where(path, lineno, shown),
                            field=shown, hint="put one KEY=VALUE per line and the whole value in the quotes; "
                                              "the line is not shown as it may hold a secret")
    return "".join(chars)


def _not_an_assignment(path, lineno, line):
    leading = _LEADING_NAME.match(line)
    name = _shown_name(leading.group(1)) if leading else None
    if name:
        return _config_error("%s line %d is not KEY=VALUE: %s is not followed by '='" % (path, lineno, name),
                             field=name, hint="write %s=VALUE; the line is not shown as it may hold a secret" % name)
    return _config_error("%s line %d is not KEY=VALUE" % (path, lineno),
                         hint="write one KEY=VALUE per line, # starts a comment; the line is not shown as it may "
                              "hold a secret")


def parse_env_text(text, path="<text>"):
    """Parse ``KEY=VALUE`` lines into a dict (later lines win); errors name the line and variable, never a value."""
    values = {}
    for lineno, line in enumerate(_NEWLINE.split(text), 1):
        stripped = line.strip(_BLANKS)
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(stripped)
        if not match:
            raise _not_an_assignment(path, lineno, stripped)
        values[match.group(1)] = _unquote(match.group(2), path, lineno, match.group(1))
    return values


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


def _single_token(value):
    """True when ``value`` cannot have run into another assignment of its line, so that a message may show it:
    no whitespace or control character (``MINIO_CA_BUNDLE=/x MINIO_SECRET_KEY=...``) and no ``=`` (an assignment
    glued on without a blank: ``...:9000MINIO_SECRET_KEY=...``, ``...;MINIO_SECRET_KEY=...``)."""
    text = str(value)
    return "=" not in text and not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text)


def parse_bool(value, name):
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _config_error("%s must be true or false (also yes/no, on/off, 1/0)" % name, field=name,
                        hint="the value given is not shown: its line may hold more than the flag")


def parse_endpoint(endpoint, secure=None, name="MINIO_ENDPOINT"):
    """Normalise an endpoint to ``(url, secure)`` by the rule of :mod:`.endpoint`; a bare ``host:port`` uses
    ``secure`` (default http), and ``secure`` must not contradict an explicit scheme."""
    hint = "use e.g. %s=http://192.168.1.10:9000" % name
    try:
        parsed = _parse_url(endpoint, field=name, hint=hint, default_scheme="https" if secure else "http",
                            exit_code=CONFIG_EXIT_CODE)
    except GpuWorkerError as err:
        if _single_token(endpoint):
            raise
        # the line may run into another assignment (the secret key's), so its text is not shown
        raise GpuWorkerError("%s %s (the value is not shown: it may hold more than the URL)" % (
            name, err.details.get("reason")), field=name, hint=hint, exit_code=CONFIG_EXIT_CODE,
            details=err.details) from None
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
            shown = self.ca_bundle if _single_token(self.ca_bundle) else "(a value with whitespace, not shown)"
            raise _config_error("MINIO_CA_BUNDLE %s does not exist" % shown, field="MINIO_CA_BUNDLE",
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
