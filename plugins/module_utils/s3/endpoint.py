# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one rule for an S3 (MinIO) endpoint URL, used by every place that takes one.

:func:`parse_endpoint` is used by the S3 client, ``minio.env`` (:mod:`.env`), the modules' ``endpoint`` option,
the GPU agent's ``minio.endpoint`` and, through the filter ``visionsuit.gpuworker.minio_endpoint_error``, by the
roles' and the playbook's preflight checks. An endpoint is ``http://HOST[:PORT]`` or ``https://HOST[:PORT]``:

* the scheme is ``http`` or ``https``, in lowercase (``https`` means TLS: the ``secure`` flag follows from it);
* a host name or IP address, IPv6 in brackets (``http://[fd00::1]:9000``);
* an optional port, 1-65535;
* nothing else: no path (a trailing ``/`` is tolerated), query or fragment, no ``user:password@`` (credentials
  are the access key and secret key), no whitespace or control characters.

A bad value raises :class:`~.errors.GpuWorkerError` whose message names the field and the value (credentials
masked) and whose hint shows the fix; ``details["reason"]`` holds the reason alone (``has an invalid port``).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
from collections import namedtuple
from urllib.parse import urlsplit

from ..errors import GpuWorkerError

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
DEFAULT_HINT = "use http://HOST:PORT or https://HOST:PORT, e.g. http://192.168.1.10:9000"


class Endpoint(namedtuple("Endpoint", "url scheme host port secure")):
    """A checked endpoint.

    ``url``: ``scheme://host[:port]`` (host lowercased, IPv6 in brackets, the port only when one was given, no
    trailing slash); ``host``: without brackets; ``port``: the given one or the scheme's default;
    ``secure``: ``scheme == "https"``.
    """

    __slots__ = ()

    @property
    def host_header(self):
        """The ``Host`` header: the host (IPv6 in brackets), plus ``:port`` unless it is the scheme's default."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else "%s:%d" % (host, self.port)


_SCHEME_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}")


def redact(text):
    """``text`` with everything before its last ``@`` masked but a leading ``scheme://`` (``http://***@host``),
    for messages: whatever stands before an ``@`` may be credentials, wherever a ``://`` is."""
    text = "" if text is None else str(text)
    if "@" not in text:
        return text
    scheme, sep, _rest = text.partition("://")
    keep = scheme + sep if sep and _SCHEME_TEXT.fullmatch(scheme) else ""
    return keep + "***" + text[text.rfind("@"):]


def parse_endpoint(value, field="endpoint", hint=None, default_scheme=None, exit_code=1):
    """Check an endpoint URL and return an :class:`Endpoint`; raise GpuWorkerError when it is not one.

    :param field: the option/variable named in the message (``MINIO_ENDPOINT``, ``minio.endpoint``, ...).
    :param hint: how to fix it (default: :data:`DEFAULT_HINT`).
    :param default_scheme: ``"http"`` or ``"https"`` to accept a bare ``HOST[:PORT]`` with that scheme (the
        ``minio.env`` form, where ``MINIO_SECURE`` picks it); None refuses a value without a scheme.
    :param exit_code: of the error (the node commands exit 3 for a bad ``minio.env``).
    """
    text = "" if value is None else str(value)
    hint = hint or DEFAULT_HINT

    def fail(reason):
        shown = "%s is empty" % field if not text.strip() else "%s %r %s" % (field, redact(text), reason)
        return GpuWorkerError(shown, field=field, hint=hint, exit_code=exit_code, details={"reason": reason})

    if not text.strip():
        raise fail("is empty")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise fail("contains whitespace or a control character")
    url = text
    if "://" not in url:
        if default_scheme not in SCHEMES:
            raise fail("has no scheme; it must start with http:// or https://")
        url = default_scheme + "://" + url
    scheme = url.split("://", 1)[0]
    if scheme not in SCHEMES:
        if scheme.lower() in SCHEMES:
            raise fail("has scheme %r; write it in lowercase (%s://)" % (scheme, scheme.lower()))
        if not _SCHEME_TEXT.fullmatch(scheme):  # not a scheme at all (e.g. user:password@host before a '://')
            raise fail("has no valid scheme; it must start with http:// or https://")
        raise fail("has scheme %r; only http and https are supported" % scheme)
    authority = url.split("://", 1)[1]
    for sep in "/?#":
        authority = authority.split(sep, 1)[0]
    if "@" in authority:
        raise fail("has no valid host (credentials belong in the access key and secret key, not in the URL)")
    if authority.startswith("[") and "]" in authority:
        # checked here, before urlsplit: Python versions differ in what they let through in brackets
        host = authority[1:].partition("]")[0]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise fail("has an invalid IPv6 address %r" % host)
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise fail("is not a valid URL (%s)" % err)
    netloc = parts.netloc
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in url or "#" in url:
        raise fail("must not contain a path or query")
    if netloc.startswith("["):
        host, _sep, rest = netloc[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise fail("has an invalid port (1-65535)")
        port_text = rest[1:]
    else:
        host, _sep, port_text = netloc.partition(":")
        if ":" in port_text:
            raise fail("has an invalid host (write IPv6 addresses in brackets: http://[fd00::1]:9000)")
    if not host:
        raise fail("has no valid host")
    port = None
    if port_text:
        if not (port_text.isdigit() and port_text.isascii() and len(port_text) <= 5) or not 0 < int(port_text) < 65536:
            raise fail("has an invalid port (1-65535)")
        port = int(port_text)
    host = host.lower()
    shown_host = "[%s]" % host if ":" in host else host
    normalized = "%s://%s%s" % (scheme, shown_host, ":%d" % port if port else "")
    return Endpoint(normalized, scheme, host, port or DEFAULT_PORTS[scheme], scheme == "https")
