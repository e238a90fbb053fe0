# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Property-based tests (hypothesis) of the node's parsers: ``minio.env`` (:mod:`.s3.env`), the object key <->
relative path rules (:mod:`.s3.keys`) and the endpoint rule (:mod:`.s3.endpoint`).

Whatever the input, each gives a value or its documented error (:class:`GpuWorkerError`, exit code 3 for
``minio.env``), never another exception; a value quoted by ``quote_env_value`` reads back exactly; a key never
maps to a path outside the sync's folder, nor to a reserved name; and no error message carries a secret placed on
a line. A random secret is random text around a fixed core (quotes, ``#``, ``=``, ``@``, blanks, line breaks and
any other character around it shape the parse), and no 5-character piece of the core may appear in what an error
says (message, field, hint, details); the realistic secret of test_no_secret_leaks.py is checked the same way.

Bounded (``max_examples``), no deadline (a loaded 2-core machine must not flake), no example database and the
hypothesis folder in a temp dir (the checkout is not written to).
"""
from __future__ import annotations

import os
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rig.fuzz import SETTINGS  # noqa: E402  (bounded, derandomized, caches outside the checkout)
from rig.leaks import SECRET, leaked  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

from visionsuit_gpuworker.errors import GpuWorkerError  # noqa: E402
from visionsuit_gpuworker.s3 import env as env_mod  # noqa: E402
from visionsuit_gpuworker.s3.endpoint import Endpoint, parse_endpoint  # noqa: E402
from visionsuit_gpuworker.s3.keys import (  # noqa: E402
    COMFYUI_PLACEHOLDERS,
    SIDECAR_SUFFIX,
    STATE_FILE,
    TEMP_SUFFIX,
    is_placeholder,
    is_reserved,
    key_to_relpath,
    matches,
    normalize_prefix,
    relpath_to_key,
    safe_join,
)

CONFIG_EXIT_CODE = env_mod.CONFIG_EXIT_CODE
# the MinIO-style secret of test_no_secret_leaks.py: no 5-character piece of it occurs in a message by chance
CORE = "Xw7KpQ2vJ"  # the part of every random secret that must never show (nor any 5 characters of it)


def error_text(err):
    """Everything an error carries that can reach an operator (message, field, hint, details)."""
    return " ".join(map(str, (err, repr(err), err.message, err.field, err.hint, err.details, err.args)))


def assert_no_leak(err, secret=CORE):
    text = error_text(err) if isinstance(err, GpuWorkerError) else str(err)
    piece = leaked(text, secret)
    assert piece is None, "secret piece %r shown in: %s" % (piece, text)


def outcome(func, *args, **kwargs):
    """("ok", value) or ("error", everything the GpuWorkerError says); any other exception propagates."""
    try:
        return "ok", func(*args, **kwargs)
    except GpuWorkerError as err:
        return "error", error_text(err)


# ---------------------------------------------------------------------------------------------- strategies
# every code point a file may hold (surrogates included: a str may carry them even if UTF-8 cannot)
any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
tricky_chars = st.sampled_from(list(" \t\r\n\x00\x0b\x0c\x85\u2028\ufeff\ufffe\uffff\ud800")
                               + list("\\'\"$`#=;&|<>(){}*?[]~!%@:/.-_")
                               + ["\u00e9", "\u4e2d", "\U0001f511", "\u00a0"])
texts = st.text(st.one_of(any_char, tricky_chars), max_size=40)
names = st.one_of(st.sampled_from(env_mod.VARIABLES + ("EMPTY", "_X", "export", "A1")),
                  st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True))
secrets = st.builds(lambda a, b: a + CORE + b, st.text(st.one_of(any_char, tricky_chars), max_size=12),
                    st.text(st.one_of(any_char, tricky_chars), max_size=12))
good_lines = st.sampled_from([
    "", "# comment", "   # indented comment", "export MINIO_ENDPOINT=http://127.0.0.1:9000",
    "MINIO_ENDPOINT='https://minio.example:9000'", "MINIO_ENDPOINT=127.0.0.1:9000", "MINIO_SECURE=false",
    "MINIO_SECURE=yes", "MINIO_ACCESS_KEY=visionsuit", 'MINIO_ACCESS_KEY="vs user"', "MINIO_REGION=eu-west-1",
    "MINIO_BUCKET_CHECKPOINTS=ck", "MINIO_BUCKET_LORAS = lo # inline", "MINIO_CHECKPOINTS_PREFIX=/sdxl/",
    "MINIO_CA_BUNDLE=", "OTHER=1", "MINIO_ENDPOINT=http://[fd00::1]:9000",
])
other_lines = st.one_of(good_lines, good_lines, texts.map(lambda t: t.replace("\n", " ").replace("\r", " ")),
                        st.builds(lambda n, v: "%s=%s" % (n, v), names, texts))
# where a secret may stand on a line of minio.env: as the secret key's value (quoted or not, well formed or not),
# alone, or after another assignment on the same line
SECRET_LINES = [
    "MINIO_SECRET_KEY={s}", "MINIO_SECRET_KEY='{s}'", 'MINIO_SECRET_KEY="{s}"', "export MINIO_SECRET_KEY={s}",
    'MINIO_SECRET_KEY="{s}', "MINIO_SECRET_KEY='{s}", "MINIO_SECRET_KEY {s}", "MINIO_SECRET_KEY: {s}",
    'MINIO_SECRET_KEY "{s}"', "{s}", "  {s}  ", "MINIO-SECRET-KEY={s}", "MINIO SECRET KEY = {s}",
    'MINIO_SECRET_KEY="{s}" trailing', "MINIO_SECRET_KEY={s} # comment",
    "MINIO_ENDPOINT=http://127.0.0.1:9 MINIO_SECRET_KEY={s}", "MINIO_SECURE=maybe MINIO_SECRET_KEY={s}",
    "MINIO_CA_BUNDLE=/nonexistent/ca.pem MINIO_SECRET_KEY={s}", "MINIO_ENDPOINT=http://visionsuit:{s}@127.0.0.1:9",
    "MINIO_ENDPOINT=visionsuit:{s}@127.0.0.1:9", "MINIO_SECURE={s}",
]
secret_lines = st.sampled_from(SECRET_LINES)


@st.composite
def env_files(draw, secret=None):
    """(file text, secret): random lines around one line holding the secret."""
    secret = draw(secrets) if secret is None else secret
    template = draw(secret_lines)
    lines = draw(st.lists(other_lines, max_size=8))
    lines.insert(draw(st.integers(0, len(lines))), template.format(s=secret))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline])), secret


# ---------------------------------------------------------------------------------------------- minio.env
@SETTINGS
@given(text=st.one_of(texts, st.lists(other_lines, max_size=10).map("\n".join)))
def test_parse_env_text_gives_a_dict_or_a_config_error(text):
    try:
        values = env_mod.parse_env_text(text)
    except GpuWorkerError as err:
        assert err.exit_code == CONFIG_EXIT_CODE and "<text>" in str(err)
        return
    assert isinstance(values, dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


@SETTINGS
@given(env_files())
def test_parse_env_text_never_shows_a_secret(case):
    text, _secret = case
    try:
        env_mod.parse_env_text(text, "/etc/comfyui/minio.env")
    except GpuWorkerError as err:
        assert err.exit_code == CONFIG_EXIT_CODE
        assert_no_leak(err)


_TMP = tempfile.TemporaryDirectory(prefix="vs-envfuzz-")


def _write_tmp(text, name="minio.env"):
    path = os.path.join(_TMP.name, name)
    with open(path, "w", encoding="utf-8", errors="surrogatepass", newline="") as f:
        f.write(text)
    return path


@SETTINGS
@given(case=st.one_of(env_files(), env_files(secret=SECRET)))
def test_load_minio_env_gives_settings_or_a_config_error_without_the_secret(case):
    text, secret = case
    try:
        settings_ = env_mod.load_minio_env(_write_tmp(text), environ={})
    except GpuWorkerError as err:
        assert err.exit_code == CONFIG_EXIT_CODE
        assert_no_leak(err, CORE if CORE in secret else SECRET)
        return
    assert isinstance(settings_, env_mod.MinioSettings)
    assert leaked(repr(settings_), CORE if CORE in secret else SECRET) is None


@SETTINGS
@given(raw=st.binary(max_size=200))
def test_read_env_file_takes_any_bytes(raw):
    path = os.path.join(_TMP.name, "bytes.env")
    with open(path, "wb") as f:
        f.write(raw)
    kind, value = outcome(env_mod.read_env_file, path)
    assert kind == "error" or isinstance(value, dict)


values = st.one_of(st.text(st.one_of(any_char, tricky_chars), max_size=60), secrets, st.none(), st.integers(),
                   st.sampled_from(["", " ", "#", "'", '"', "\\", "\\\\\"", "$HOME", "`id`", " # x", "a #b"]))


@SETTINGS
@given(value=values, name=st.sampled_from(["MINIO_SECRET_KEY", "X"]), export=st.booleans(),
       comment=st.sampled_from(["", " # note", "\t#", "   "]))
@example(value="a\\", name="X", export=False, comment="")
@example(value="\\\"'", name="X", export=True, comment=" # c")
def test_quote_env_value_reads_back_exactly(value, name, export, comment):
    try:
        quoted = env_mod.quote_env_value(value, name)
    except GpuWorkerError as err:
        text = value if isinstance(value, str) else str(value)
        assert err.field == name and env_mod._unwritable(text)  # only what a reader cannot take
        assert_no_leak(err)
        return
    line = "%s%s=%s%s" % ("export " if export else "", name, quoted, comment)
    text = "# head\nOTHER=1\n%s\nLAST='x'\n" % line
    expected = "" if value is None else str(value)
    assert env_mod.parse_env_text(text)[name] == expected


# ---------------------------------------------------------------------------------------------- keys
SEGMENTS = [".", "..", "", "a", "b c", "\u00fc\u00f1", "..a", "a..", ".hidden", "\\", "..\\..", "a\\b", " ",
            "\x00", "x\x00y", STATE_FILE, STATE_FILE + ".1.tmp", ".m" + TEMP_SUFFIX, ".m" + SIDECAR_SUFFIX,
            "input", "example.png", "put_loras_here", "_output_images_will_be_put_here", "put_mine_here", "~",
            "%2e%2e", "\u2024\u2024", "\uff0e\uff0e", "C:", "//"]
segments = st.one_of(st.sampled_from(SEGMENTS), st.text(st.one_of(any_char, tricky_chars), max_size=8))
keys = st.one_of(
    st.builds(lambda lead, segs, trail: lead + "/".join(segs) + trail, st.sampled_from(["", "/", "\\", "./"]),
              st.lists(segments, min_size=1, max_size=5), st.sampled_from(["", "/", "//"])),
    st.text(st.one_of(any_char, tricky_chars), max_size=30),
)
prefixes = st.one_of(st.sampled_from(["", "/", "sdxl", "/sdxl/", " a/b ", "a//b", "..", "renders", "input"]),
                     st.text(st.one_of(any_char, tricky_chars), max_size=10), st.none())
ROOT = os.path.join(_TMP.name, "comfyui", "models", "checkpoints")
INPUT_ROOT = os.path.join(_TMP.name, "comfyui", "input")


def _utf8(text):
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _inside(root, path):
    root = os.path.abspath(root)
    return os.path.commonpath([root, path]) == root and path != root


@SETTINGS
@given(key=keys, prefix=prefixes)
@example(key="../x", prefix="")
@example(key="sdxl/../../x", prefix="sdxl")
@example(key="input/example.png", prefix="")
@example(key="a/put_loras_here", prefix="a")
@example(key="a/\ud800", prefix="")  # a lone surrogate (a JSON key): no file name can hold it
def test_key_to_relpath_stays_inside_and_never_gives_a_reserved_name(key, prefix):
    kind, rel = outcome(key_to_relpath, key, prefix)
    if kind == "error" or rel is None:
        return
    assert isinstance(rel, str) and rel and "\x00" not in rel and not rel.startswith("/")
    rel.encode("utf-8")  # a name every file system call can take
    parts = rel.split("/")
    assert all(p not in ("", ".", "..") for p in parts)
    assert not any(is_reserved(p) for p in parts) and not is_placeholder(rel)
    assert relpath_to_key(rel, prefix) == key  # the way back gives the same key
    for root in (ROOT, INPUT_ROOT):
        path = safe_join(root, rel)
        assert _inside(root, path) and path == os.path.join(root, *parts)
        assert os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


safe_segments = segments.filter(lambda s: s not in ("", ".", "..") and "/" not in s and "\x00" not in s
                                and not is_reserved(s))


@SETTINGS
@given(parts=st.lists(safe_segments, min_size=1, max_size=5), prefix=prefixes)
@example(parts=["\\render.png"], prefix="renders")  # a Linux file name: was refused as "absolute" on the way back
def test_relpath_to_key_and_back(parts, prefix):
    """What upload() makes of a local file name, download() maps back to the same name."""
    rel = "/".join(parts)
    assume(not is_placeholder(rel))
    kind, key = outcome(relpath_to_key, rel, prefix)
    if not _utf8(rel):  # a local name that is not UTF-8 cannot become a key: refused with the project's error
        assert kind == "error"
        return
    assert kind == "ok"
    kind, back = outcome(key_to_relpath, key, prefix)
    if "\x00" in key or not _utf8(key):  # a NUL or a lone surrogate (prefix or name): refused, never mapped
        assert kind == "error"
        return
    assert (kind, back) == ("ok", rel)


@SETTINGS
@given(relpath=st.one_of(keys, st.text(max_size=20)), root=st.sampled_from([ROOT, INPUT_ROOT, "/", "rel/root"]))
@example(relpath="..", root=ROOT)
@example(relpath="a/../../b", root=ROOT)
def test_safe_join_gives_a_path_inside_the_root_or_refuses(relpath, root):
    kind, path = outcome(safe_join, root, relpath)
    if kind == "ok":
        assert _inside(root, path)


@SETTINGS
@given(name=st.one_of(segments, st.sampled_from(sorted(COMFYUI_PLACEHOLDERS))), rel=keys,
       prefix=prefixes, include=st.lists(texts, max_size=3), exclude=st.lists(texts, max_size=3))
def test_helpers_never_raise(name, rel, prefix, include, exclude):
    assert isinstance(is_reserved(name), bool) and isinstance(is_placeholder(rel), bool)
    assert isinstance(normalize_prefix(prefix), str)
    kind, key = outcome(relpath_to_key, rel, prefix)  # a local name that is not UTF-8 is refused, never mapped
    assert (kind == "ok" and isinstance(key, str)) if _utf8(rel) else kind == "error"
    assert isinstance(matches(rel, include or None, exclude or None), bool)
    if name in COMFYUI_PLACEHOLDERS:
        assert is_reserved(name) and is_placeholder(rel.rstrip("/") + "/" + name)


# ---------------------------------------------------------------------------------------------- endpoint
schemes = st.sampled_from(["http", "https", "HTTP", "Https", "ftp", "", "http:", "s3"])
hosts = st.one_of(st.sampled_from(["127.0.0.1", "minio", "MinIO.Example", "[::1]", "[fd00::1]", "[fe80::1%eth0]",
                                   "[::1", "::1", "[zz]", "", "h_st", "\u00fcber", "xn--bcher-kva", "[]",
                                   "a..b", "-a", "1.2.3.999"]),
                  st.text(st.one_of(any_char, tricky_chars), max_size=12))
ports = st.one_of(st.sampled_from(["", ":", ":9000", ":0", ":65535", ":65536", ":-1", ":+1", ": 1", ":\u0663",
                                   ":0009000", ":9000:1", ":99999999999999999999"]),
                  st.integers(-10, 70000).map(lambda n: ":%d" % n), st.text(max_size=6).map(lambda t: ":" + t))
tails = st.sampled_from(["", "/", "//", "/x", "?a=1", "#f", "/?", " ", "\n", "\t"])
endpoints = st.one_of(
    st.builds(lambda s, h, p, t: (s + "://" if s else "") + h + p + t, schemes, hosts, ports, tails),
    st.text(st.one_of(any_char, tricky_chars), max_size=40), st.none(), st.integers(), st.binary(max_size=10))


@SETTINGS
@given(value=endpoints, default_scheme=st.sampled_from([None, "http", "https", "ftp"]),
       exit_code=st.sampled_from([1, 3]))
@example(value="http://[::1]:9000/", default_scheme=None, exit_code=3)
@example(value="HTTP://h", default_scheme=None, exit_code=1)
def test_parse_endpoint_gives_an_endpoint_or_a_gpuworker_error(value, default_scheme, exit_code):
    try:
        ep = parse_endpoint(value, field="MINIO_ENDPOINT", default_scheme=default_scheme, exit_code=exit_code)
    except GpuWorkerError as err:
        assert err.exit_code == exit_code and err.field == "MINIO_ENDPOINT"
        assert isinstance(err.details.get("reason"), str) and err.details["reason"]
        return
    assert isinstance(ep, Endpoint) and ep.scheme in ("http", "https") and ep.secure == (ep.scheme == "https")
    assert ep.host and ep.host == ep.host.lower() and 0 < ep.port < 65536
    assert not any(c.isspace() for c in ep.url) and "@" not in ep.url
    assert parse_endpoint(ep.url) == ep  # normalised: parsing it again gives the same endpoint


@SETTINGS
@given(secret=secrets, user=st.sampled_from(["", "visionsuit", "a:b", "u"]), scheme=schemes, host=hosts,
       port=ports, tail=tails, secure=st.sampled_from([None, True, False]))
def test_credentials_in_an_endpoint_are_never_shown(secret, user, scheme, host, port, tail, secure):
    assume("@" not in host + port + tail)
    value = (scheme + "://" if scheme else "") + (user + ":" if user else "") + secret + "@" + host + port + tail

    for parse in (lambda v: parse_endpoint(v, default_scheme="http"),
                  lambda v: env_mod.parse_endpoint(v, secure)):  # the library rule and its minio.env flavour
        try:
            ep = parse(value)
        except GpuWorkerError as err:
            assert_no_leak(err)
        else:
            assert leaked(str(ep), CORE) is None


@pytest.mark.parametrize("value", ["http://h:" + "9" * 5000, "h:" + "0" * 4301])
def test_endpoint_with_a_port_of_thousands_of_digits_is_refused(value):
    with pytest.raises(GpuWorkerError):
        parse_endpoint(value, default_scheme="http")


GLUED = ["MINIO_ENDPOINT=http://127.0.0.1:9000MINIO_SECRET_KEY={s}",
         "MINIO_ENDPOINT=http://127.0.0.1:9000;MINIO_SECRET_KEY={s}",
         "MINIO_ENDPOINT=http://127.0.0.1:9000/MINIO_SECRET_KEY={s}",
         "MINIO_CA_BUNDLE=/etc/ca.pemMINIO_SECRET_KEY={s}"]


@pytest.mark.parametrize("line", GLUED)
def test_a_secret_glued_to_a_shown_value_is_not_shown(line):
    text = line.format(s=SECRET) + "\nMINIO_ENDPOINT=https://127.0.0.1:9\nMINIO_ACCESS_KEY=a\nMINIO_SECRET_KEY=x\n"
    if line.startswith("MINIO_ENDPOINT"):
        text = text.replace("MINIO_ENDPOINT=https://127.0.0.1:9\n", "")
    with pytest.raises(GpuWorkerError) as e:
        env_mod.load_minio_env(_write_tmp(text, "glued.env"), environ={})
    assert_no_leak(e.value, SECRET)


@pytest.mark.parametrize("value", ["visionsuit:%s@127.0.0.1://" % SECRET,
                                   "visionsuit:%s@minio:9000?x=http://y" % SECRET])
def test_credentials_before_a_later_scheme_separator_are_not_shown(value):
    for parse in (lambda v: parse_endpoint(v, default_scheme="http"), lambda v: env_mod.parse_endpoint(v)):
        with pytest.raises(GpuWorkerError) as e:
            parse(value)
        assert_no_leak(e.value, SECRET)
