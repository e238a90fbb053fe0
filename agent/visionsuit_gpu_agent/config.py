# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The agent's configuration: ``/etc/visionsuit-gpu-agent/config.yaml`` (YAML, or JSON which is valid YAML).

:func:`load` reads and checks the file and returns a :class:`Config`; every problem is collected and
reported with the dotted key at fault (``minio.endpoint: ...``), so ``--check-config`` names each bad key at
once. Missing keys take the defaults of :data:`SPEC`.

No problem ever quotes the file: YAML and JSON syntax errors give the line, the column and the key there (when it
is one of :data:`SPEC`), never the offending text, which may be the API token or the MinIO secret key; the values
of the secret keys and unknown keys that do not look like key names are not shown either.

The MinIO connection may come from the node's env file instead (``minio.env_file``, normally
``/etc/comfyui/minio.env``, the file the node commands read): its ``MINIO_*`` variables (:data:`ENV_KEYS`) are
read with the library's parser (:mod:`visionsuit_gpuworker.s3.env`) when the configuration is loaded, i.e. once at
start and by ``--check-config``. A key given both here and in the env file is a problem. Problems about a value
from the env file name the file and the variable (``minio.env_file (/etc/comfyui/minio.env) MINIO_SECRET_KEY: is
required``) and never show the value or any part of it: any line of that file may hold the secret key.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import stat
from urllib.parse import urlsplit

from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.s3.endpoint import parse_endpoint, redact
from visionsuit_gpuworker.s3.env import parse_env_text

try:  # Debian's python3-yaml, visible through the venv's --system-site-packages
    import yaml
except ImportError:  # pragma: no cover - JSON still works
    yaml = None

DEFAULT_PATH = "/etc/visionsuit-gpu-agent/config.yaml"
SAMPLERS_RE = re.compile(r"^[A-Za-z0-9_+.\- ]{1,64}$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` lists one ``key: message`` line per bad key."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def _url(value, schemes=("http", "https"), path_ok=False):
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. "Invalid IPv6 URL" for http://[::1
        return "must be a URL such as http://HOST:PORT"
    if parts.scheme not in schemes or not parts.hostname:
        return "must be a URL such as http://HOST:PORT"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has an invalid port"
    if not path_ok and parts.path not in ("", "/"):
        return "must not contain a path"
    return None


def _minio_endpoint(value):
    """The library's one endpoint rule (visionsuit_gpuworker.s3.endpoint), as a config problem."""
    if not value:
        return "is required (http://HOST:9000)"
    try:
        parse_endpoint(value, field="minio.endpoint")
    except GpuWorkerError as err:
        return "{} ({})".format(err.details.get("reason") or err.message, err.hint)
    return None


def _networks(value):
    for item in value:
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            return f"{item!r} is not a network (use CIDR such as 10.0.0.0/8 or an address)"
    return None


def _bucket(value):
    if value and not BUCKET_RE.match(value):
        return "is not a valid bucket name (3-63 lowercase letters, digits, dots, hyphens)"
    return None


def _abs(value):
    return None if not value or os.path.isabs(value) else "must be an absolute path"


# key -> (type(s), default, check or None). Types: bool is checked before int (bool is an int in Python).
SPEC = {
    "server.listen": (str, "127.0.0.1", lambda v: None if _is_ip(v) else "must be an IP address"),
    "server.port": (int, 8081, lambda v: None if 0 <= v < 65536 else "must be 1-65535 (0: any free port)"),
    "server.api_token": (str, "", lambda v: None if len(v) >= 16 else "is required (16 characters at least)"),
    "server.tls_cert": (str, "", _abs),
    "server.tls_key": (str, "", _abs),
    "server.allowed_networks": (list, [], _networks),
    "server.max_body_bytes": (int, 1048576, lambda v: None if 1024 <= v <= 64 * 1048576 else "must be 1 KiB-64 MiB"),
    "server.metrics_require_auth": (bool, False, None),
    "server.threads_timeout": (float, 30.0, lambda v: None if v > 0 else "must be positive"),
    "state_dir": (str, "/var/lib/visionsuit-gpu-agent", lambda v: None if v and os.path.isabs(v)
                  else "must be an absolute path"),
    "minio.env_file": (str, "", _abs),
    "minio.endpoint": (str, "", _minio_endpoint),
    "minio.access_key": (str, "", lambda v: None if v else "is required"),
    "minio.secret_key": (str, "", lambda v: None if v else "is required"),
    "minio.region": (str, "us-east-1", None),
    "minio.ca_bundle": (str, "", _abs),
    "minio.validate_certs": (bool, True, None),
    "minio.bucket_checkpoints": (str, "comfyui-checkpoints", _bucket),
    "minio.bucket_loras": (str, "comfyui-loras", _bucket),
    "minio.bucket_outputs": (str, "comfyui-outputs", _bucket),
    "minio.outputs_prefix": (str, "", None),
    "minio.retries": (int, 3, lambda v: None if 0 <= v <= 10 else "must be 0-10"),
    "minio.backoff": (float, 0.5, lambda v: None if 0 <= v <= 30 else "must be 0-30 seconds"),
    "minio.timeout": (float, 60.0, lambda v: None if v > 0 else "must be positive"),
    "minio.workers": (int, 4, lambda v: None if 1 <= v <= 64 else "must be 1-64"),
    "minio.transfer_nice": (int, 10, lambda v: None if 0 <= v <= 19 else "must be 0-19 (0: as the API threads)"),
    "comfyui.url": (str, "http://127.0.0.1:8188", lambda v: _url(v, path_ok=True)),
    "comfyui.instances": (list, [], None),   # checked by _instances_problems (one line per bad item)
    "comfyui.checkpoints_dir": (str, "/opt/comfyui/models/checkpoints", _abs),
    "comfyui.loras_dir": (str, "/opt/comfyui/models/loras", _abs),
    "comfyui.output_dir": (str, "/opt/comfyui/output", _abs),
    "comfyui.timeout": (float, 30.0, lambda v: None if v > 0 else "must be positive"),
    "comfyui.submit_retries": (int, 2, lambda v: None if 0 <= v <= 10 else "must be 0-10"),
    "comfyui.retry_delay": (float, 2.0, lambda v: None if v >= 0 else "must not be negative"),
    "comfyui.unreachable_grace": (float, 30.0, lambda v: None if v > 0 else "must be positive"),
    "comfyui.poll_interval": (float, 1.0, lambda v: None if v > 0 else "must be positive"),
    "comfyui.health_interval": (float, 5.0, lambda v: None if v > 0 else "must be positive"),
    "jobs.max_queue": (int, 16, lambda v: None if 1 <= v <= 10000 else "must be 1-10000"),
    "jobs.timeout": (float, 1800.0, lambda v: None if v > 0 else "must be positive"),
    "jobs.retention_hours": (float, 168.0, lambda v: None if v > 0 else "must be positive"),
    "jobs.persist_checkpoints": (bool, True, None),
    "jobs.persist_loras": (bool, False, None),
    "jobs.cache_max_bytes": (int, 0, lambda v: None if v >= 0 else "must not be negative (0: unlimited)"),
    "jobs.reserve_bytes": (int, 1073741824, lambda v: None if v >= 0 else "must not be negative"),
    "jobs.surface_mode": (str, "symlink", lambda v: None if v in ("symlink", "copy") else "must be symlink or copy"),
    "jobs.keep_outputs": (bool, False, None),
    "jobs.shutdown_grace": (float, 30.0, lambda v: None if v >= 0 else "must not be negative"),
    "jobs.retry_after": (int, 10, lambda v: None if 1 <= v <= 3600 else "must be 1-3600 seconds"),
    "callback.attempts": (int, 5, lambda v: None if 1 <= v <= 20 else "must be 1-20"),
    "callback.backoff": (float, 1.0, lambda v: None if 0 <= v <= 60 else "must be 0-60 seconds"),
    "callback.max_backoff": (float, 30.0, lambda v: None if v >= 0 else "must not be negative"),
    "callback.timeout": (float, 10.0, lambda v: None if v > 0 else "must be positive"),
    "callback.ca_bundle": (str, "", _abs),
    "defaults.template": (str, "sdxl-txt2img", None),
    "defaults.negative_prompt": (str, "", None),
    "defaults.steps": (int, 25, lambda v: None if 1 <= v <= 1000 else "must be 1-1000"),
    "defaults.cfg": (float, 7.0, lambda v: None if 0 <= v <= 100 else "must be 0-100"),
    "defaults.width": (int, 1024, lambda v: None if 16 <= v <= 16384 and v % 8 == 0 else "must be 16-16384, x8"),
    "defaults.height": (int, 1024, lambda v: None if 16 <= v <= 16384 and v % 8 == 0 else "must be 16-16384, x8"),
    "defaults.sampler": (str, "euler", lambda v: None if SAMPLERS_RE.match(v) else "is not a sampler name"),
    "defaults.scheduler": (str, "normal", lambda v: None if SAMPLERS_RE.match(v) else "is not a scheduler name"),
    "defaults.batch_size": (int, 1, lambda v: None if 1 <= v <= 64 else "must be 1-64"),
    "defaults.denoise": (float, 1.0, lambda v: None if 0 <= v <= 1 else "must be 0-1"),
    "defaults.lora_strength": (float, 0.8, lambda v: None if -10 <= v <= 10 else "must be -10..10"),
}

SECRET_KEYS = ("server.api_token", "minio.secret_key")

# The keys ``minio.env_file`` provides, and the variable of the env file each one comes from (the same names as the
# node commands use; MINIO_SECURE is not needed, the endpoint's scheme says it, and the agent has no use for
# MINIO_CHECKPOINTS_PREFIX / MINIO_LORAS_PREFIX: an envelope names each model by its full key).
ENV_KEYS = {
    "minio.endpoint": "MINIO_ENDPOINT",
    "minio.access_key": "MINIO_ACCESS_KEY",
    "minio.secret_key": "MINIO_SECRET_KEY",
    "minio.region": "MINIO_REGION",
    "minio.ca_bundle": "MINIO_CA_BUNDLE",
    "minio.bucket_checkpoints": "MINIO_BUCKET_CHECKPOINTS",
    "minio.bucket_loras": "MINIO_BUCKET_LORAS",
    "minio.bucket_outputs": "MINIO_BUCKET_OUTPUTS",
    "minio.outputs_prefix": "MINIO_OUTPUTS_PREFIX",
}


INSTANCE_KEYS = ("url", "gpu")


def _instances_problems(items):
    """Problems of ``comfyui.instances``: a list of ``{url, gpu}`` (``gpu``: a GPU index or null), one ComfyUI
    per item; the item's position is named (``comfyui.instances[1].url: ...``). Values are shown as for
    ``comfyui.url`` (user:password of a URL masked), never a value that is not a URL string."""
    key = "comfyui.instances"
    if not items:
        return [f"{key}: must list one instance at least ({{url, gpu}}); leave it out to use comfyui.url alone"]
    problems, urls, gpus = [], {}, {}
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a mapping with url and gpu (e.g. {{url: http://127.0.0.1:8188, "
                            "gpu: 0}})")
            continue
        for name in sorted(str(k) for k in item if str(k) not in INSTANCE_KEYS):
            shown = name if re.match(r"^[a-z][a-z0-9_]{0,39}$", name) and (len(name) < 16 or "_" in name) \
                else "<a key that is not a key name, not shown>"
            problems.append(f"{where}.{shown}: unknown key (an instance has url and gpu)")
        url = item.get("url")
        if not isinstance(url, str) or not url:
            problems.append(f"{where}.url: is required (a URL such as http://127.0.0.1:8188)")
        else:
            why = _url(url, path_ok=True)
            if why:
                problems.append(f"{where}.url: {why} (got {_shown(url)!r})")
            elif url.rstrip("/") in urls:
                problems.append(f"{where}.url: is the URL of {key}[{urls[url.rstrip('/')]}] too; one slot per "
                                "ComfyUI")
            else:
                urls[url.rstrip("/")] = i
        gpu = item.get("gpu")
        if gpu is not None:
            if not _type_ok(gpu, int) or gpu < 0:
                problems.append(f"{where}.gpu: must be a GPU index (0, 1, ...) or null, got "
                                f"{gpu!r}" if isinstance(gpu, (int, float)) else
                                f"{where}.gpu: must be a GPU index (0, 1, ...) or null")
            elif gpu in gpus:
                problems.append(f"{where}.gpu: GPU {gpu} is the GPU of {key}[{gpus[gpu]}] too; one instance per GPU")
            else:
                gpus[gpu] = i
    return problems


def _is_ip(value):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _shown(value):
    """A bad value as echoed in a problem, any ``user:password@`` of a URL masked."""
    return redact(value) if isinstance(value, str) and "://" in value else value


def _type_ok(value, kind):
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}


class Config:
    """Checked configuration; ``cfg["minio.endpoint"]`` or ``cfg.section("minio")``."""

    def __init__(self, values, path=None):
        self.values = values
        self.path = path

    def __getitem__(self, key):
        return self.values[key]

    def get(self, key, default=None):
        return self.values.get(key, default)

    def section(self, name):
        prefix = name + "."
        return {k[len(prefix):]: v for k, v in self.values.items() if k.startswith(prefix)}

    def redacted(self):
        return {k: ("<redacted>" if k in SECRET_KEYS and v else v) for k, v in self.values.items()}

    @property
    def slots(self):
        """The render slots, one per ComfyUI instance: ``[{"slot": i, "url": ..., "gpu": index or None}]``.
        ``comfyui.instances`` when given, else one slot on ``comfyui.url`` (gpu None)."""
        items = self.values.get("comfyui.instances") or [{"url": self.values["comfyui.url"], "gpu": None}]
        return [{"slot": i, "url": item["url"], "gpu": item.get("gpu")} for i, item in enumerate(items)]

    @property
    def db_path(self):
        return os.path.join(self["state_dir"], "jobs.sqlite3")

    @property
    def cache_dir(self):
        return os.path.join(self["state_dir"], "cache")


SECTIONS = frozenset(k.split(".", 1)[0] for k in SPEC if "." in k)
_KEY_NAMES = SECTIONS | {k.rsplit(".", 1)[-1] for k in SPEC}
# a mapping key as written in YAML or JSON (``api_token:``, ``"api_token":``)
_KEY_IN_LINE = re.compile(r"""(?<![\w-])["']?([A-Za-z_][A-Za-z0-9_]*)["']?[ \t]*:""")
# a quoted piece of a parser's message (PyYAML and json quote the offending character, alias, anchor or tag)
_QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")
# ... kept only when it is a token name or one YAML indicator (they are not taken from a value)
_SAFE_QUOTED = re.compile(r"""^(['"])(?:<[a-z ]+>|[\[\]{}:,?|>!&*#%@ -]|\\t)\1$""")


def _masked(message):
    """A parser's message with every quoted piece of the document replaced by '...'."""
    return _QUOTED.sub(lambda m: m.group(0) if _SAFE_QUOTED.match(m.group(0)) else "'...'", str(message or ""))


def _indent(line):
    return len(line) - len(line.lstrip(" \t"))


def _key_at(lines, line, column):
    """The dotted key (``server.api_token``) written before 0-based ``line``/``column``, when :data:`SPEC` knows it:
    the last key name on that line, in the section named earlier on the line (flow style) or on the nearest line
    above with less indentation (block style). None otherwise: an unknown name may be a piece of a value."""
    if line is None or not 0 <= line < len(lines):
        return None
    text = lines[line][:max(column, 0) + 1]
    found = [m.group(1) for m in _KEY_IN_LINE.finditer(text) if m.group(1) in _KEY_NAMES]
    if not found:
        return None
    key = found[-1]
    sections = [k for k in found[:-1] if k in SECTIONS]
    if sections:
        section = sections[-1]
    elif key in SECTIONS and _indent(lines[line]) == 0:
        return key
    else:
        section = None
        below = _indent(lines[line])
        for above in reversed(lines[:line]):
            if above.strip() and not above.lstrip().startswith("#") and _indent(above) < below:
                names = [m.group(1) for m in _KEY_IN_LINE.finditer(above)]
                section = names[0] if names and names[0] in SECTIONS else None
                break
    dotted = f"{section}.{key}" if section else key
    return dotted if dotted in SPEC else None


def _syntax_problem(source, kind, text, description, line=None, column=None, start=None):
    """One problem line for a YAML/JSON syntax error: position, key, the parser's description (masked)."""
    lines = text.split("\n")
    where = f" at line {line + 1}, column {column + 1}" if line is not None else ""
    key = _key_at(lines, line, column or 0)
    if start is not None and start[0] is not None and start[0] != line:
        key = key or _key_at(lines, *start)
        where += f" (from line {start[0] + 1}, column {start[1] + 1})"
    return "{}: not valid {}{}{}: {}; the text is not shown as it may hold a secret".format(
        source, kind, where, f" in {key}" if key else "", _masked(description))


def _yaml_problem(source, text, err):
    if isinstance(err, yaml.reader.ReaderError):
        before = text[:err.position] if isinstance(err.position, int) else ""
        line, column = before.count("\n"), len(before) - (before.rfind("\n") + 1)
        return _syntax_problem(source, "YAML", text, "a character YAML does not allow (escape control characters "
                               "in a double-quoted string)", line, column)
    if isinstance(err, yaml.MarkedYAMLError):
        description = ": ".join(_masked(p) for p in (err.context, err.problem) if p) or type(err).__name__
        mark = err.problem_mark or err.context_mark
        start = (err.context_mark.line, err.context_mark.column) if err.context_mark and err.problem_mark else None
        return _syntax_problem(source, "YAML", text, description, mark.line if mark else None,
                               mark.column if mark else None, start)
    return _syntax_problem(source, "YAML", text, type(err).__name__)


def parse_text(text, source="config"):
    """Parse YAML (when PyYAML is there) or JSON text into a dict; ConfigError otherwise (its problem gives the
    line and column of a syntax error, never the text there)."""
    if yaml is not None:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError([_yaml_problem(source, text, err)]) from None
        except (ValueError, OverflowError, RecursionError) as err:   # e.g. a timestamp out of range
            raise ConfigError([_syntax_problem(source, "YAML", text, f"a value cannot be read ({type(err).__name__})")
                               ]) from None
    else:
        try:
            doc = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as err:
            raise ConfigError([_syntax_problem(source, "JSON (PyYAML is not installed)", text,
                                               re.sub(r"[\s:]+at:?$", "", err.msg), err.lineno - 1,
                                               err.colno - 1)]) from None
        except (ValueError, RecursionError) as err:
            raise ConfigError([_syntax_problem(source, "JSON (PyYAML is not installed)", text,
                                               type(err).__name__)]) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError([f"{source}: must be a mapping of sections (server, minio, comfyui, ...)"])
    return doc


def _shown_key(key):
    """An unknown key as shown in its problem: as written when it looks like a key name (lowercase, digits and
    underscores; 16 characters or more only with an underscore, unlike a hex token), else masked: it may be a
    secret pasted where a key belongs (``api_token tok-...:``)."""
    section, dot, name = key.partition(".")
    if not (dot and section in SECTIONS):
        section, dot, name = "", "", key
    if re.match(r"^[a-z][a-z0-9_]{0,39}$", name) and (len(name) < 16 or "_" in name):
        return key
    return f"{section}{dot}<a key that is not a key name, not shown>"


def _flatten(doc, problems):
    flat = {}
    sections = {k.split(".", 1)[0] for k in SPEC if "." in k}
    for key, value in doc.items():
        key = str(key)
        if key in sections:
            if value is None:
                continue
            if not isinstance(value, dict):
                problems.append(f"{key}: must be a mapping")
                continue
            for sub, subvalue in value.items():
                flat[f"{key}.{sub}"] = subvalue
        else:
            flat[key] = value
    return flat


ENV_FILE_MAX_BYTES = 1048576
_ENV_FILE_FIX = ("the gpu_agent and comfyui roles write it from visionsuit_minio_* or comfyui_minio_*: run the "
                 "role, or point minio.env_file at the node's minio.env")


def read_env_file(path):
    """The variables of the env file ``path``, parsed by the node commands' parser: ``(values, None)``, or
    ``(None, problem)`` with one line that names the file and the fix and never shows a line of it."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):   # a FIFO or a device would block or never end
            return None, f"minio.env_file: {path} is not a regular file (point minio.env_file at the minio.env file)"
        with open(path, "rb") as f:
            raw = f.read(ENV_FILE_MAX_BYTES + 1)
    except FileNotFoundError:
        return None, f"minio.env_file: {path} does not exist ({_ENV_FILE_FIX})"
    except PermissionError:
        return None, (f"minio.env_file: {path} is not readable by this user (uid {os.geteuid()}); run the agent "
                      "in the file's group: the gpu_agent role's unit joins ComfyUI's group and the file is "
                      "root:comfyui 0640")
    except OSError as err:
        return None, f"minio.env_file: cannot read {path}: {err.strerror or type(err).__name__}"
    if len(raw) > ENV_FILE_MAX_BYTES:
        return None, f"minio.env_file: {path} is larger than 1 MiB; it is not a minio.env file"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"minio.env_file: {path} is not UTF-8 text (byte {err.start + 1} of the file)"
    try:
        return parse_env_text(text, path), None
    except GpuWorkerError as err:   # names the line and the variable, never the text of the line
        return None, "minio.env_file: {}{}".format(err.message, f" ({err.hint})" if err.hint else "")


def _merge_env_file(flat, problems):
    """Put the values of ``minio.env_file`` (when set) into ``flat``. Returns ``{key: label}`` for the keys of
    :data:`ENV_KEYS` the file provides, the label naming the file and the variable; the label is None for a key
    not to be checked at all (the file is unusable or the key is given twice: that problem is already listed)."""
    path = flat.get("minio.env_file")
    if path is None or (isinstance(path, str) and not path):
        return {}
    not_here = [key for key in ENV_KEYS if flat.get(key) is None]
    if not (isinstance(path, str) and os.path.isabs(path)):
        return dict.fromkeys(not_here)   # the SPEC loop reports minio.env_file itself
    env, problem = read_env_file(path)
    if problem:
        problems.append(problem)
        return dict.fromkeys(not_here)
    sources = {}
    for key, variable in ENV_KEYS.items():
        if variable in env and flat.get(key) is not None:
            problems.append(f"{key}: is set here and in minio.env_file ({path}, as {variable}); keep one")
            sources[key] = None
        elif key in not_here:
            flat[key] = env.get(variable) or None   # absent or empty: the default
            sources[key] = f"minio.env_file ({path}) {variable}"
    return sources


def check(doc, path=None):
    """Check a parsed document; return a :class:`Config` or raise :class:`ConfigError` listing every problem."""
    problems = []
    flat = _flatten(doc, problems)
    values = {}
    for key in sorted(set(flat) - set(SPEC)):
        problems.append(f"{_shown_key(key)}: unknown key")
    sources = _merge_env_file(flat, problems)
    for key, (kind, default, validator) in SPEC.items():
        if key in sources and sources[key] is None:
            continue
        if key not in flat or flat[key] is None:
            value = copy.deepcopy(default)
        else:
            value = flat[key]
            if kind is float and _type_ok(value, float):
                try:
                    value = float(value)
                except OverflowError:  # an integer beyond any float
                    problems.append(f"{key}: is out of range (an integer too large for a number)")
                    continue
            if not _type_ok(value, kind):
                shown = "<redacted>" if key in SECRET_KEYS else value
                problems.append(f"{key}: must be {_TYPE_NAMES[kind]}, got {shown!r}")
                continue
        if validator is not None:
            why = validator(value)
            if why and key in sources:   # a value of the env file: never shown, nor any quoted piece of it
                problems.append(f"{sources[key]}: {_masked(why)}")
                continue
            if why:
                shown = "" if key in SECRET_KEYS else f" (got {_shown(value)!r})"
                problems.append("{}: {}{}".format(key, why, shown if value not in ("", []) else ""))
                continue
        values[key] = value
    if "comfyui.instances" in values and flat.get("comfyui.instances") is not None:
        problems += _instances_problems(values["comfyui.instances"])
        if flat.get("comfyui.url") is not None:
            problems.append("comfyui.url/comfyui.instances: give one of them (comfyui.url: one ComfyUI; "
                            "comfyui.instances: a list of {url, gpu}, one render slot each)")
    if not problems:
        if bool(values["server.tls_cert"]) != bool(values["server.tls_key"]):
            problems.append("server.tls_cert/server.tls_key: give both or neither")
        for key in ("server.tls_cert", "server.tls_key", "minio.ca_bundle", "callback.ca_bundle"):
            if values[key] and not os.path.isfile(values[key]):
                problems.append(f"{sources[key]}: names a file that does not exist" if key in sources
                                else f"{key}: {values[key]} does not exist")
        if values["defaults.template"]:
            from .workflow import template_names
            if values["defaults.template"] not in template_names():
                problems.append("defaults.template: unknown template {!r} (shipped: {})".format(
                    values["defaults.template"], ", ".join(template_names())))
    if problems:
        raise ConfigError(problems)
    return Config(values, path)


def load(path=DEFAULT_PATH):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror or err}"]) from None
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: is not UTF-8 text (byte {err.start + 1} of the file)"]) from None
    return check(parse_text(text, path), path)
