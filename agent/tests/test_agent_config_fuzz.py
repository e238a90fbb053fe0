# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""GPU agent: property-based tests of the configuration loader (hypothesis).

Whatever the file holds (YAML, JSON, broken text, odd values) :func:`config.load` and :func:`config.check`
either return a :class:`config.Config` or raise the documented :class:`config.ConfigError` with ``key: message``
problems, never another exception (a traceback at start-up); and a secret (the API token, the MinIO secret key,
a token pasted where a key belongs) placed in the text never appears in the error.

Bounded (``max_examples``), no deadline (a loaded 2-core machine must not flake), no example database (the
checkout is not written to).
"""
from __future__ import annotations

import json
import math

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rig.fuzz import SETTINGS  # noqa: E402  (bounded, derandomized, caches outside the checkout)

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

from visionsuit_gpu_agent import config  # noqa: E402

TOKEN = "tok-9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # shaped like a real token: not a key name

SECTIONS = sorted({k.split(".", 1)[0] for k in config.SPEC if "." in k})
KEY_NAMES = sorted({k.split(".", 1)[-1] for k in config.SPEC})

# Pieces of YAML/JSON syntax, key names and the secret, to build texts that are nearly a configuration.
FRAGMENTS = [
    "server:", "minio:", "comfyui:", "jobs:", "defaults:", "callback:", "state_dir: /var/lib/x",
    f"  api_token: {TOKEN}", f"  secret_key: {TOKEN}", f'  api_token: "{TOKEN}', f"  secret_key: '{TOKEN}",
    f"  api_token: [{TOKEN}", f"server: {{api_token: {TOKEN}", f'{{"server": {{"api_token": "{TOKEN}"',
    f"api_token {TOKEN}:", f"  {TOKEN}: 1", f"{TOKEN}", f"  - {TOKEN}", f"  api_token: |\n    {TOKEN}",
    f"  api_token: !!binary {TOKEN}", f"  secret_key: &a {TOKEN}", "  x: *a", "  port: 8081", "  port: 0x1F",
    "  port: 99999999999999999999999999999999999999999999", "  backoff: 1" + "0" * 400, "  timeout: .nan",
    "  timeout: -.inf", "  url: http://[::1", "  endpoint: http://[bad", "  url: http://h:99999",
    "  allowed_networks: [10.0.0.0/8, x]", "  listen: ::1", "  when: 2001-02-03", "  when: 9999-99-99",
    "{", "}", "[", "]", ":", "- ", "? ", "'", '"', "\t", "  ", "#", "---", "...", "%YAML 1.1", "!!set {a}",
    "!!omap [a: 1]", "!!python/object:os.system", "&x", "*x", "<<: *x", "\\x00", "\u0000", "\ufeff", "\x85",
    "\r", "\\", ",", "|", ">", "!", "%", "@", "`", "null", "~", "true", "1e400", "-0", "0o17",
]


def _secret_free(err):
    text = str(err) + "\n" + "\n".join(err.problems)
    assert TOKEN not in text
    for piece in (TOKEN[4:20], TOKEN[-16:]):  # no part of it either
        assert piece not in text


def _load_text(tmp, text):
    path = tmp / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass", newline="")
    return config.load(str(path))


def _load_bytes(tmp, data):
    path = tmp / "config.yaml"
    path.write_bytes(data)
    return config.load(str(path))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("cfgfuzz")


@SETTINGS
@given(text=st.text(max_size=400))
def test_arbitrary_text_gives_only_config_error(tmp, text):
    try:
        _load_text(tmp, text)
    except config.ConfigError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_give_only_config_error(tmp, data):
    try:
        _load_bytes(tmp, data)
    except config.ConfigError as err:
        assert err.problems


@SETTINGS
@given(pieces=st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), min_size=1, max_size=24),
       joiners=st.lists(st.sampled_from(["\n", " ", "", "\n  ", ", ", ": "]), min_size=24, max_size=24))
@example(pieces=[f"server:\n  api_token: '{TOKEN}"], joiners=["\n"] * 24)
@example(pieces=[f'{{"server": {{"api_token": "{TOKEN}"'], joiners=[""] * 24)
@example(pieces=["minio:", "  backoff: 1" + "0" * 400], joiners=["\n"] * 24)
@example(pieces=["comfyui:", "  url: http://[::1"], joiners=["\n"] * 24)
def test_nearly_valid_yaml_with_a_secret_gives_only_config_error_without_it(tmp, pieces, joiners):
    text = "".join(p + j for p, j in zip(pieces, joiners))
    try:
        _load_text(tmp, text)
    except config.ConfigError as err:
        assert err.problems
        _secret_free(err)


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10 ** 300, max_value=10 ** 400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), st.binary(max_size=8),
    st.dates(), st.datetimes(), st.sampled_from(["http://[::1", "http://h:99999", "http://u:p@h:1/x", "/abs",
                                                 "10.0.0.0/8", "::1", "symlink", "\x00"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)
KEYS = st.one_of(st.sampled_from(KEY_NAMES + SECTIONS), st.text(max_size=20), st.integers(), st.none(),
                 st.booleans(), st.floats(allow_nan=False))


@SETTINGS
@given(doc=st.dictionaries(
    st.one_of(st.sampled_from(SECTIONS), KEYS),
    st.one_of(VALUES, st.dictionaries(st.one_of(st.sampled_from(KEY_NAMES), KEYS), VALUES, max_size=8)),
    max_size=8))
@example(doc={"minio": {"backoff": 10 ** 400}})
@example(doc={"comfyui": {"url": "http://[::1"}})
@example(doc={"server": {"api_token": TOKEN, "port": "x"}, "minio": {"secret_key": [TOKEN]}})
def test_arbitrary_mappings_give_only_config_error(doc, tmp):
    try:
        cfg = config.check(doc)
    except config.ConfigError as err:
        assert err.problems
    else:
        assert isinstance(cfg, config.Config)
        for key, (kind, _default, _check) in config.SPEC.items():
            if kind is float:
                assert isinstance(cfg[key], float) and not math.isnan(cfg[key]), key


@SETTINGS
@given(doc=st.dictionaries(st.sampled_from(SECTIONS), st.dictionaries(st.sampled_from(KEY_NAMES), VALUES,
                                                                      max_size=8), max_size=6),
       where=st.sampled_from([("server", "api_token"), ("minio", "secret_key")]),
       wrap=st.sampled_from([lambda t: t, lambda t: [t], lambda t: {"x": t}, lambda t: t + "\n", lambda t: 7]))
def test_a_secret_value_never_appears_in_the_problems_json_and_yaml(tmp, doc, where, wrap):
    doc = {s: dict(v) for s, v in doc.items()}
    doc.setdefault(where[0], {})[where[1]] = wrap(TOKEN)
    for k, v in list(doc.items()):  # the secret only where it belongs
        for sub in list(v):
            if sub in ("api_token", "secret_key") and (k, sub) != where:
                del v[sub]
    try:
        text = json.dumps(doc, default=str, allow_nan=True)
    except ValueError:
        return
    for attempt in (lambda: config.check(doc), lambda: _load_text(tmp, text)):
        try:
            attempt()
        except config.ConfigError as err:
            _secret_free(err)


@pytest.mark.parametrize("doc, problem", [
    # found by the fuzzing above: both raised (OverflowError, ValueError) instead of a ConfigError
    ({"minio": {"backoff": 10 ** 400}}, "minio.backoff: is out of range (an integer too large for a number)"),
    ({"comfyui": {"url": "http://[::1"}}, "comfyui.url: must be a URL such as http://HOST:PORT (got 'http://[::1')"),
])
def test_found_by_fuzzing_a_huge_integer_and_a_broken_url_are_config_problems(doc, problem):
    with pytest.raises(config.ConfigError) as caught:
        config.check(doc)
    assert problem in caught.value.problems


# ------------------------------------------------------------------------------------------- minio.env_file
# Pieces of a node's minio.env with the secret where it belongs and where it does not (a value that runs into
# another assignment, a secret pasted into the endpoint, a bucket or a path, a line without '=').
ENV_FRAGMENTS = [
    "MINIO_ENDPOINT=http://127.0.0.1:9000", "MINIO_ACCESS_KEY=a", "MINIO_SECRET_KEY=s", "MINIO_SECURE=maybe",
    f"MINIO_SECRET_KEY={TOKEN}", f'MINIO_SECRET_KEY="{TOKEN}', f"MINIO_SECRET_KEY='{TOKEN}",
    f"MINIO_SECRET_KEY {TOKEN}",
    f'MINIO_SECRET_KEY="{TOKEN}" x', f"MINIO_ENDPOINT={TOKEN}", f"MINIO_ENDPOINT=http://{TOKEN}",
    f"MINIO_ENDPOINT=http://[{TOKEN}]:9", f"MINIO_ENDPOINT=http://h:9000/{TOKEN}", f"MINIO_ENDPOINT={TOKEN}://h",
    f"MINIO_ENDPOINT=HTTP{TOKEN}://h", f"MINIO_ENDPOINT=http://a:{TOKEN}@h:9", f"MINIO_ENDPOINT=http://h:{TOKEN}",
    f"MINIO_ENDPOINT=http://h:9 MINIO_SECRET_KEY={TOKEN}", f"MINIO_BUCKET_LORAS={TOKEN}",
    f"MINIO_BUCKET_OUTPUTS=Bad_{TOKEN}", f"MINIO_CA_BUNDLE={TOKEN}", f"MINIO_CA_BUNDLE=/{TOKEN}",
    f"MINIO_REGION={TOKEN}", f"MINIO_ACCESS_KEY={TOKEN}", f"MINIO_OUTPUTS_PREFIX={TOKEN}", TOKEN, f"export {TOKEN}=1",
    f"{TOKEN}=x", "export ", "#", "'", '"', "=", "\\", " #", "\x00", "\ufeff", "\r", "\t", "\x85", "\u2028",
]
YAML_MINIO_KEYS = ["endpoint", "access_key", "secret_key", "region", "ca_bundle", "bucket_loras", "outputs_prefix"]


def _check_env_file(tmp, data, yaml_keys=()):
    path = tmp / "minio.env"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8", errors="surrogatepass", newline="")
    doc = {"server": {"api_token": "t" * 16}, "minio": dict({"env_file": str(path)}, **dict.fromkeys(yaml_keys, "v"))}
    try:
        return config.check(doc)
    except config.ConfigError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)
        _secret_free(err)
        return None


@SETTINGS
@given(pieces=st.lists(st.one_of(st.sampled_from(ENV_FRAGMENTS), st.text(max_size=12)), min_size=1, max_size=16),
       joiners=st.lists(st.sampled_from(["\n", " ", "", "\r\n", "=", '"']), min_size=16, max_size=16),
       yaml_keys=st.sets(st.sampled_from(YAML_MINIO_KEYS), max_size=3))
@example(pieces=[f"MINIO_ENDPOINT=http://[{TOKEN}]:9"], joiners=["\n"] * 16, yaml_keys=set())
@example(pieces=[f"MINIO_ENDPOINT=HTTP{TOKEN}://h", f"MINIO_CA_BUNDLE=/{TOKEN}"], joiners=["\n"] * 16,
         yaml_keys={"secret_key"})
def test_env_file_with_a_secret_gives_only_config_error_without_it(tmp, pieces, joiners, yaml_keys):
    _check_env_file(tmp, "".join(p + j for p, j in zip(pieces, joiners)), sorted(yaml_keys))


@SETTINGS
@given(data=st.binary(max_size=300))
def test_arbitrary_env_file_bytes_give_only_config_error(tmp, data):
    _check_env_file(tmp, data)
