# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""AWS Signature Version 4 for S3 requests (stdlib only), and the header encoding of user metadata.

:func:`sign_v4` returns the ``Authorization`` header of a request from its method, URI-encoded path
(:func:`uri_encode`), query (:func:`canonical_query`), headers and payload hash (the SHA-256 of the body,
:data:`EMPTY_SHA256` for none, or :data:`UNSIGNED_PAYLOAD`). :func:`encode_metadata_value` /
:func:`decode_metadata_value` carry ``x-amz-meta-*`` values beyond printable ASCII as RFC 2047.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import hmac
from email.header import decode_header
from urllib.parse import quote

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def uri_encode(text, safe=""):
    """RFC 3986 encoding as SigV4 wants it (unreserved characters kept, UTF-8 bytes as %XX)."""
    return quote(text.encode("utf-8"), safe=safe + "~")


def canonical_query(params):
    """Canonical query string from a dict or a list of (name, value)."""
    items = params.items() if isinstance(params, dict) else params
    pairs = sorted((uri_encode(str(k)), uri_encode("" if v is None else str(v))) for k, v in items)
    return "&".join("%s=%s" % kv for kv in pairs)


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key, date, region, service="s3"):
    k = _hmac(("AWS4" + secret_key).encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def sign_v4(method, canonical_uri, query, headers, payload_hash, access_key, secret_key, region,
            amz_date, service="s3"):
    """Return the ``Authorization`` header value for a request.

    :param canonical_uri: the already URI-encoded path (``/bucket/key%20name``).
    :param query: dict or list of (name, value), unencoded.
    :param headers: dict of the headers to sign (all of them are signed; ``host`` must be present).
    :param amz_date: ``YYYYMMDDTHHMMSSZ`` (the same value as the ``x-amz-date`` header).
    """
    lower = {}
    for name, value in headers.items():
        lower[name.strip().lower()] = " ".join(str(value).strip().split())
    signed = sorted(lower)
    canonical_headers = "".join("%s:%s\n" % (n, lower[n]) for n in signed)
    signed_headers = ";".join(signed)
    canonical_request = "\n".join([method, canonical_uri, canonical_query(query), canonical_headers,
                                   signed_headers, payload_hash])
    date = amz_date[:8]
    scope = "%s/%s/%s/aws4_request" % (date, region, service)
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                                hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()])
    signature = hmac.new(signing_key(secret_key, date, region, service), string_to_sign.encode("utf-8"),
                         hashlib.sha256).hexdigest()
    return "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        access_key, scope, signed_headers, signature)


def encode_metadata_value(value):
    """Header-safe form of a user metadata value (RFC 2047 for anything beyond printable ASCII)."""
    value = str(value)
    if all(32 <= ord(c) < 127 for c in value) and not value.startswith("=?"):
        return value
    return "=?UTF-8?B?%s?=" % base64.b64encode(value.encode("utf-8")).decode("ascii")


def decode_metadata_value(value):
    if value is None or not value.startswith("=?"):
        return value
    try:
        parts = decode_header(value)
    except Exception:  # noqa: BLE001 - keep the raw value when it is not valid RFC 2047
        return value
    out = []
    for text, charset in parts:
        out.append(text.decode(charset or "utf-8", "replace") if isinstance(text, bytes) else text)
    return "".join(out)
