# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A minimal S3 client for MinIO on ``http.client`` (stdlib only).

This module is over 600 lines because :class:`S3Client` is one class, one method per S3 operation around the
request/retry loop and error mapping they all share.

* AWS Signature Version 4 in the ``Authorization`` header (:mod:`.sigv4`), payload ``UNSIGNED-PAYLOAD`` (default;
  bodies carry ``Content-MD5`` instead) or the SHA-256 of the payload (``payload_signing="sha256"``);
* the endpoint is checked by the one rule of :mod:`.endpoint`;
* path-style addressing (``http://host:9000/bucket/key``), http and https (custom CA bundle, optional
  ``validate_certs=False``), one kept-alive connection per thread;
* retries with exponential backoff and full jitter on transient failures (connection errors, 5xx, 429,
  ``SlowDown``), within the rule of :data:`REPEATABLE_POSTS` (which requests may be sent again); permanent
  failures (bad credentials, missing bucket, ...) raise :class:`~.errors.GpuWorkerError` at once with a message
  naming the endpoint/bucket and how to fix it. The secret key never appears in a message.

Every HTTP attempt is counted in :attr:`S3Client.stats` (``{"ListObjectsV2": 1, "GetObject": 3}``) so that callers
and tests can prove which requests a sync issued.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import collections
import hashlib
import http.client
import os
import random
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET  # noqa: S405 - parses replies of the configured S3 server only
from urllib.parse import unquote_plus

from ..errors import EXIT_ACCESS, GpuWorkerError, TransientError
from .endpoint import parse_endpoint
from .sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    canonical_query,
    decode_metadata_value,
    encode_metadata_value,
    sign_v4,
    uri_encode,
)

DEFAULT_REGION = "us-east-1"
CHUNK = 1024 * 1024
USER_AGENT = "visionsuit-gpuworker-s3/1"
CHECKSUM_ALGORITHMS = ("sha256", "sha1", "crc32", "crc32c", "crc64nvme")

# The retry rule (the one place it is decided; :meth:`S3Client.request` applies it).
#
# A request may have been carried out by the server even though its attempt failed: the reply was lost (connection
# reset or closed after the request went out) or was a 5xx. Sending it again is "blind" only for idempotent
# requests, whose repetition leaves the store as one execution would: GET, HEAD, PUT (PutObject, UploadPart of the
# same part number, CreateBucket) and DELETE (DeleteObject, AbortMultipartUpload, DeleteBucket). Their repeated
# attempt may only answer differently, which the callers handle: DeleteBucket answers NoSuchBucket (accepted by
# :meth:`S3Client.delete_bucket` after a repeat), CreateBucket BucketAlreadyOwnedByYou (reported as "existed"),
# AbortMultipartUpload 404 (accepted).
#
# A POST is not idempotent in general: it is repeated only when listed here, with why that is safe. Any other POST
# is sent again only when the failed attempt never reached the server (the connection could not be opened).
REPEATABLE_POSTS = {
    # each attempt starts another upload id; the one an attempt with a lost reply started is never used and stays
    # incomplete on the server (harmless: MinIO removes incomplete uploads after api stale_uploads_expiry, 24h)
    "CreateMultipartUpload": "a lost attempt leaves an unused incomplete upload",
    # a repeat after the server completed the upload answers NoSuchUpload: complete_multipart_upload() then accepts
    # the object only when its ETag is the multipart ETag of the parts sent (_check_lost_complete)
    "CompleteMultipartUpload": "reconciled by the ETag of the object",
    # deleting a key that is already gone succeeds (quiet mode reports nothing): the same effect as one execution
    "DeleteObjects": "deleting a missing key succeeds",
}

# Error codes that retrying cannot fix, with the hint shown to the operator.
_PERMANENT_HINTS = {
    "SignatureDoesNotMatch": "the secret key is wrong: check MINIO_SECRET_KEY / secret_key",
    "InvalidAccessKeyId": "the access key is unknown to the server: check MINIO_ACCESS_KEY / access_key",
    "AccessDenied": "the access key lacks permission: attach a policy allowing this bucket to the MinIO user",
    "NoSuchBucket": "create it (test-create-buckets or visionsuit.gpuworker.minio_bucket) or fix the bucket name",
    "RequestTimeTooSkewed": "the clocks differ by more than 15 minutes: enable time sync (chrony/systemd-timesyncd)",
    "InvalidBucketName": "use 3-63 lowercase letters, digits, dots or hyphens",
    "BucketNotEmpty": "empty it first (force: true)",
    "AuthorizationHeaderMalformed": "check MINIO_REGION / region",
}


def _strip_ns(tag):
    return tag.rsplit("}", 1)[-1]


def _xml_find(elem, name):
    for child in elem:
        if _strip_ns(child.tag) == name:
            return child
    return None


def _xml_text(elem, name, default=None):
    child = _xml_find(elem, name)
    if child is None or child.text is None:
        return default
    return child.text


def _parse_xml(body):
    try:
        return ET.fromstring(body)  # noqa: S314 - reply of the configured server
    except ET.ParseError:
        return None


def _xml_escape(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


class FileSlice:
    """A request body read from ``path`` (``length`` bytes from ``offset``), re-readable for retries."""

    def __init__(self, path, offset=0, length=None, throttle=None):
        self.path = path
        self.offset = offset
        self.length = os.path.getsize(path) - offset if length is None else length
        self.throttle = throttle  # throttle(nbytes), called before each chunk is sent (the run's bwlimit)

    def chunks(self, size=CHUNK):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            left = self.length
            while left > 0:
                data = f.read(min(size, left))
                if not data:
                    raise GpuWorkerError("%s shrank while it was being uploaded" % self.path)
                left -= len(data)
                yield data

    def sha256(self):
        h = hashlib.sha256()
        for data in self.chunks():
            h.update(data)
        return h.hexdigest()


class Response:
    """Status, lower-cased headers and (for non-streamed requests) the body of a reply."""

    def __init__(self, status, headers, body=b""):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    @property
    def etag(self):
        return (self.header("etag") or "").strip('"')

    def metadata(self):
        return {k[len("x-amz-meta-"):]: decode_metadata_value(v)
                for k, v in self.headers.items() if k.startswith("x-amz-meta-")}


class Cancelled(GpuWorkerError):
    """The transfer was stopped on request (another transfer failed, or the user interrupted)."""


class S3Client:
    """S3 operations against one endpoint.

    :param endpoint: ``http(s)://host[:port]`` (no path).
    :param retries: attempts after the first one for transient failures.
    :param backoff: base delay in seconds (doubled each attempt, capped by ``max_backoff``, full jitter).
    :param payload_signing: ``"unsigned"`` (default) or ``"sha256"``.
    """

    def __init__(self, endpoint, access_key, secret_key, region=None, ca_bundle=None, validate_certs=True,
                 timeout=60.0, retries=5, backoff=0.5, max_backoff=20.0, payload_signing="unsigned"):
        parsed = parse_endpoint(endpoint, field="endpoint")
        if not access_key or not secret_key:
            raise GpuWorkerError("access key and secret key are required", field="access_key",
                                 hint="set MINIO_ACCESS_KEY and MINIO_SECRET_KEY")
        if payload_signing not in ("unsigned", "sha256"):
            raise GpuWorkerError("payload_signing must be 'unsigned' or 'sha256'", field="payload_signing")
        self.secure = parsed.secure
        self.host = parsed.host
        self.port = parsed.port
        self.host_header = parsed.host_header
        self.endpoint = "%s://%s" % (parsed.scheme, self.host_header)
        self.access_key = access_key
        self._secret_key = secret_key
        self.region = region or DEFAULT_REGION
        self.ca_bundle = ca_bundle
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.payload_signing = payload_signing
        self.stats = collections.Counter()
        self._stats_lock = threading.Lock()
        self._local = threading.local()
        self._ssl_context = None
        if self.secure:
            if ca_bundle and not os.path.isfile(ca_bundle):
                raise GpuWorkerError("CA bundle %s does not exist" % ca_bundle, field="ca_bundle",
                                     hint="set MINIO_CA_BUNDLE / ca_bundle to the PEM file of the MinIO CA")
            ctx = ssl.create_default_context(cafile=ca_bundle or None)
            if not validate_certs:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl_context = ctx

    def __repr__(self):
        return "S3Client(endpoint=%r, access_key=%r, region=%r)" % (self.endpoint, self.access_key, self.region)

    # ------------------------------------------------------------------ plumbing
    def _count(self, op):
        with self._stats_lock:
            self.stats[op] += 1

    def _connection(self, fresh=False):
        conn = getattr(self._local, "conn", None)
        if conn is not None and not fresh:
            return conn, True
        if conn is not None:
            conn.close()
        if self.secure:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self._ssl_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._local.conn = conn
        return conn, False

    def _drop_connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def close(self):
        self._drop_connection()

    @staticmethod
    def object_path(bucket, key=None):
        path = "/" + uri_encode(bucket)
        if key is not None:
            path += "/" + uri_encode(key, safe="/")
        return path

    def _what(self, bucket, key=None):
        if key is None:
            return "bucket '%s' on %s" % (bucket, self.endpoint) if bucket else self.endpoint
        return "'%s' in bucket '%s' on %s" % (key, bucket, self.endpoint)

    def _sleep(self, attempt):
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        time.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto

    def _send(self, conn, method, url, headers, body):
        conn.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        if isinstance(body, FileSlice):
            for data in body.chunks():
                if body.throttle is not None:
                    body.throttle(len(data))
                conn.send(data)
        elif body:
            conn.send(body)
        return conn.getresponse()

    def request(self, op, method, bucket=None, key=None, query=None, headers=None, body=None,
                consume=None, ok=(200,), retry_consume=None):
        """Send one S3 request with retries and return a :class:`Response`.

        :param consume: ``consume(resp)`` reads the body of a successful reply itself (streaming); otherwise the
            whole (small) body is read into ``Response.body``.
        :param ok: the statuses that count as success.
        :param retry_consume: called before re-sending after ``consume`` failed mid-body; returns the new
            extra headers (e.g. an updated ``Range``), or raises to give up.

        Failed attempts are repeated as :data:`REPEATABLE_POSTS` describes. A permanent error that answers a
        repeated attempt, after an earlier one may have been carried out, has ``details["repeated"] = True``.
        """
        query = query or {}
        path = self.object_path(bucket, key) if bucket else "/"
        qs = canonical_query(query)
        url = path + ("?" + qs if qs else "")
        extra = dict(headers or {})
        if body is None:
            payload_hash = EMPTY_SHA256
            length = 0
        elif isinstance(body, FileSlice):
            payload_hash = body.sha256() if self.payload_signing == "sha256" else UNSIGNED_PAYLOAD
            length = body.length
        else:
            payload_hash = hashlib.sha256(body).hexdigest()
            length = len(body)
        attempt = 0
        stale_retry_done = False
        repeatable = method != "POST" or op in REPEATABLE_POSTS
        repeated = False  # an earlier attempt may have been carried out (it was sent; its reply was lost or a 5xx)
        while True:
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            hdrs = {"host": self.host_header, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
            for name, value in extra.items():
                hdrs[name.lower()] = value
            if method in ("PUT", "POST") or length:
                hdrs["content-length"] = str(length)
            hdrs["authorization"] = sign_v4(method, path, query, hdrs, payload_hash, self.access_key,
                                            self._secret_key, self.region, amz_date)
            hdrs["user-agent"] = USER_AGENT
            self._count(op)
            reused = False
            sent = False
            try:
                conn, reused = self._connection()
                if conn.sock is None:
                    conn.connect()  # apart from sending: a failure here means the server saw nothing
                sent = True
                resp = self._send(conn, method, url, hdrs, body)
                status = resp.status
                resp_headers = {k.lower(): v for k, v in resp.getheaders()}
                if status in ok and consume is not None and method != "HEAD":
                    try:
                        consume(Response(status, resp_headers), resp)
                    except GpuWorkerError:
                        self._drop_connection()
                        raise
                    if resp.will_close:
                        self._drop_connection()
                    return Response(status, resp_headers)
                data = resp.read()
                if resp.will_close:
                    self._drop_connection()
            except ssl.SSLCertVerificationError as err:
                self._drop_connection()
                raise GpuWorkerError("TLS certificate of %s could not be verified: %s" % (
                    self.endpoint, getattr(err, "verify_message", None) or err), field="ca_bundle",
                    hint="set MINIO_CA_BUNDLE / ca_bundle to the CA that signed the MinIO certificate")
            except socket.gaierror as err:
                self._drop_connection()
                raise GpuWorkerError("cannot resolve the host of %s: %s" % (self.endpoint, err), field="endpoint",
                                     hint="check MINIO_ENDPOINT / endpoint")
            except (OSError, http.client.HTTPException) as err:
                self._drop_connection()
                if sent and not repeatable:
                    raise TransientError(
                        "the reply of MinIO at %s to %s %s was lost: %s (not sent again: %s is not idempotent)" % (
                            self.endpoint, op, self._what(bucket, key), _describe_error(err), op),
                        field="endpoint", hint="check the state on the server, then run again")
                repeated = repeated or sent
                if retry_consume is not None and consume is not None:
                    extra.update(retry_consume() or {})
                if reused and not stale_retry_done:
                    # a kept-alive connection the server had closed: retry at once on a fresh one
                    stale_retry_done = True
                    continue
                if attempt >= self.retries:
                    raise TransientError(
                        "cannot reach MinIO at %s for %s %s: %s (after %d attempts)" % (
                            self.endpoint, op, self._what(bucket, key), _describe_error(err), attempt + 1),
                        field="endpoint", hint="is MinIO running and reachable? check MINIO_ENDPOINT / endpoint")
                self._sleep(attempt)
                attempt += 1
                continue
            if status in ok:
                return Response(status, resp_headers, data)
            code, message = _error_code(status, data, resp_headers)
            if status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout", "InternalError",
                                                          "ServiceUnavailable", "XMinioServerNotInitialized"):
                if attempt >= self.retries or not repeatable:
                    raise TransientError("MinIO at %s kept failing %s %s: HTTP %d %s (after %d attempts)" % (
                        self.endpoint, op, self._what(bucket, key), status, code, attempt + 1),
                        hint="check the MinIO server's health and logs")
                self._sleep(attempt)
                attempt += 1
                repeated = True
                if retry_consume is not None and consume is not None:
                    extra.update(retry_consume() or {})
                continue
            err = self._permanent(op, status, code, message, bucket, key)
            if repeated:
                err.details["repeated"] = True
            raise err

    def _permanent(self, op, status, code, message, bucket, key):
        hint = _PERMANENT_HINTS.get(code)
        if code == "NoSuchUpload":
            return GpuWorkerError("%s %s failed: the server does not know the multipart upload (aborted or "
                                  "already completed)" % (op, self._what(bucket, key)),
                                  hint="run the upload again", details={"status": status, "code": code})
        if code == "NoSuchKey" or (status == 404 and key is not None and code != "NoSuchBucket"):
            return GpuWorkerError("object %s does not exist" % self._what(bucket, key), hint=hint,
                                  details={"status": status, "code": code or "NoSuchKey"})
        if code == "NoSuchBucket" or (status == 404 and key is None and bucket):
            return GpuWorkerError("bucket '%s' does not exist on %s" % (bucket, self.endpoint), field="bucket",
                                  hint=_PERMANENT_HINTS["NoSuchBucket"],
                                  details={"status": status, "code": "NoSuchBucket"})
        if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId"):
            return GpuWorkerError("MinIO at %s rejected the credentials of access key '%s' (%s)" % (
                self.endpoint, self.access_key, code), field="secret_key" if code[0] == "S" else "access_key",
                hint=hint, exit_code=EXIT_ACCESS, details={"status": status, "code": code})
        if status == 403:
            code = code or "AccessDenied"
            return GpuWorkerError("access denied by MinIO at %s for %s %s with access key '%s' (%s)" % (
                self.endpoint, op, self._what(bucket, key), self.access_key, code),
                hint=hint or "check the access key, the secret key and the user's bucket policy",
                exit_code=EXIT_ACCESS, details={"status": status, "code": code})
        if status == 412:
            return GpuWorkerError("%s changed on the server during the transfer" % self._what(bucket, key),
                                  hint="run the sync again", details={"status": status, "code": code})
        text = "%s %s failed: HTTP %d %s" % (op, self._what(bucket, key), status, code or "")
        if message:
            text += ": " + message
        return GpuWorkerError(text.strip(), hint=hint, details={"status": status, "code": code})

    # ------------------------------------------------------------------ buckets
    def bucket_exists(self, bucket):
        try:
            self.request("HeadBucket", "HEAD", bucket)
        except GpuWorkerError as err:
            if err.details.get("code") == "NoSuchBucket":
                return False
            raise
        return True

    def head_bucket(self, bucket):
        """Raise GpuWorkerError unless the bucket exists and is accessible."""
        self.request("HeadBucket", "HEAD", bucket)

    def create_bucket(self, bucket):
        body = None
        if self.region != DEFAULT_REGION:
            body = ("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                    "<LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>"
                    % _xml_escape(self.region)).encode("utf-8")
        try:
            self.request("CreateBucket", "PUT", bucket, body=body)
        except GpuWorkerError as err:
            if err.details.get("code") in ("BucketAlreadyOwnedByYou",):
                return False
            raise
        return True

    def delete_bucket(self, bucket):
        try:
            self.request("DeleteBucket", "DELETE", bucket, ok=(200, 204))
        except GpuWorkerError as err:
            if not (err.details.get("code") == "NoSuchBucket" and err.details.get("repeated")):
                raise  # else: an earlier attempt, whose reply was lost, deleted it

    # ------------------------------------------------------------------ listing
    def list_objects(self, bucket, prefix="", max_keys=1000):
        """Yield ``{"key", "size", "etag", "last_modified"}`` for every object under ``prefix`` (paginated)."""
        token = None
        while True:
            query = {"list-type": "2", "encoding-type": "url", "max-keys": str(max_keys)}
            if prefix:
                query["prefix"] = prefix
            if token:
                query["continuation-token"] = token
            resp = self.request("ListObjectsV2", "GET", bucket, query=query)
            root = _parse_xml(resp.body)
            if root is None:
                raise TransientError("MinIO at %s returned an unreadable listing of bucket '%s'" % (
                    self.endpoint, bucket))
            encoded = (_xml_text(root, "EncodingType") or "").lower() == "url"
            for child in root:
                if _strip_ns(child.tag) != "Contents":
                    continue
                key = _xml_text(child, "Key", "")
                if encoded:
                    key = unquote_plus(key)
                yield {
                    "key": key,
                    "size": int(_xml_text(child, "Size", "0")),
                    "etag": (_xml_text(child, "ETag", "") or "").strip('"'),
                    "last_modified": _xml_text(child, "LastModified"),
                }
            truncated = (_xml_text(root, "IsTruncated", "false") or "").lower() == "true"
            token = _xml_text(root, "NextContinuationToken")
            if not truncated or not token:
                return

    # ------------------------------------------------------------------ objects
    def head_object(self, bucket, key, part_number=None, checksum_mode=True):
        """Return a dict: size, etag, last_modified, content_type, metadata, checksums, parts_count."""
        query = {"partNumber": str(part_number)} if part_number else None
        headers = {"x-amz-checksum-mode": "ENABLED"} if checksum_mode else None
        resp = self.request("HeadObject", "HEAD", bucket, key, query=query, headers=headers, ok=(200, 206))
        return _object_info(resp)

    def get_object(self, bucket, key, write, start=0, end=None, etag=None, cancelled=None, checksum_mode=False,
                   on_headers=None, buffer=None):
        """Stream an object (or the byte range ``start..end`` inclusive) to ``write(position, data)``.

        ``position`` is the absolute offset in the object. A connection lost mid-body is retried from the
        byte where it stopped (``If-Match: etag`` guards against the object changing in between). Memory use
        is one chunk. ``cancelled()`` returning true stops the transfer. ``checksum_mode`` asks for the object's
        ``x-amz-checksum-*`` headers (a GET of the whole object returns them). ``on_headers(info)`` is called
        with the object info of the first reply before its body is read. ``buffer`` (a writable buffer, e.g. a
        page-aligned ``mmap``): the body is read into it and ``write`` gets a memoryview of it, valid only during the
        call (no allocation per chunk). Returns that info dict.
        """
        state = {"pos": start, "info": None}

        def range_headers():
            h = {}
            if state["pos"] > 0 or end is not None:
                h["range"] = "bytes=%d-%s" % (state["pos"], "" if end is None else end)
            if etag:
                h["if-match"] = '"%s"' % etag
            if checksum_mode:
                h["x-amz-checksum-mode"] = "ENABLED"
            return h

        def consume(reply, raw):
            if state["pos"] > 0 and reply.status == 200:
                raise GpuWorkerError("MinIO at %s ignored the Range header for %s" % (
                    self.endpoint, self._what(bucket, key)))
            if state["info"] is None:
                state["info"] = _object_info(reply)
                if on_headers is not None:
                    on_headers(state["info"])
            view = memoryview(buffer) if buffer is not None else None
            while True:
                if cancelled is not None and cancelled():
                    raise Cancelled("transfer of %s cancelled" % self._what(bucket, key))
                if view is None:
                    data = raw.read(CHUNK)
                else:
                    data = view[:raw.readinto(view)]
                if not data:
                    break
                try:
                    write(state["pos"], data)
                except OSError as err:
                    raise GpuWorkerError("cannot write %s locally: %s" % (key, err),
                                         hint="check free space and permissions of the destination")
                state["pos"] += len(data)

        if end is not None and end < start:
            return {}
        self.request("GetObject", "GET", bucket, key, headers=range_headers(), consume=consume, ok=(200, 206),
                     retry_consume=range_headers)
        if end is not None and state["pos"] != end + 1:
            raise TransientError("short read of %s: got bytes %d-%d of %d-%d" % (
                self._what(bucket, key), start, state["pos"] - 1, start, end))
        return state["info"] or {}

    def put_object(self, bucket, key, body, content_type=None, metadata=None, content_md5=None, checksum_crc32=None):
        """Upload ``body`` (bytes or :class:`FileSlice`) in one request; returns the ETag.

        ``checksum_crc32`` (base64, see :func:`.checksums.crc32_b64`) is sent as ``x-amz-checksum-crc32``: the server
        checks it and stores it as the object's full-object checksum, which downloads then verify against.
        """
        headers = _put_headers(content_type, metadata)
        if content_md5:
            headers["content-md5"] = content_md5
        if checksum_crc32:
            headers["x-amz-checksum-crc32"] = checksum_crc32
        resp = self.request("PutObject", "PUT", bucket, key, headers=headers, body=body)
        return resp.etag

    def create_multipart_upload(self, bucket, key, content_type=None, metadata=None, checksum_algorithm=None,
                                checksum_type=None):
        """Start a multipart upload; returns the upload id. ``checksum_algorithm="CRC32"`` with
        ``checksum_type="FULL_OBJECT"`` makes the server keep a CRC32 of the whole object (parts then carry
        ``checksum_crc32`` and :meth:`complete_multipart_upload` the combined value)."""
        headers = _put_headers(content_type, metadata)
        if checksum_algorithm:
            headers["x-amz-checksum-algorithm"] = checksum_algorithm
        if checksum_type:
            headers["x-amz-checksum-type"] = checksum_type
        resp = self.request("CreateMultipartUpload", "POST", bucket, key, query={"uploads": ""}, headers=headers)
        root = _parse_xml(resp.body)
        upload_id = _xml_text(root, "UploadId") if root is not None else None
        if not upload_id:
            raise GpuWorkerError("MinIO at %s returned no UploadId for %s" % (self.endpoint, self._what(bucket, key)))
        return upload_id

    def upload_part(self, bucket, key, upload_id, part_number, body, content_md5=None, checksum_crc32=None):
        headers = {}
        if content_md5:
            headers["content-md5"] = content_md5
        if checksum_crc32:
            headers["x-amz-checksum-crc32"] = checksum_crc32
        query = {"partNumber": str(part_number), "uploadId": upload_id}
        resp = self.request("UploadPart", "PUT", bucket, key, query=query, headers=headers or None, body=body)
        return resp.etag

    def complete_multipart_upload(self, bucket, key, upload_id, parts, checksum_crc32=None, checksum_type=None):
        """``parts``: list of (part_number, etag) or (part_number, etag, part_crc32_b64). ``checksum_crc32``: the
        CRC32 of the whole object (base64) for a ``FULL_OBJECT`` upload. Returns the final ETag."""
        xml = []
        for part in sorted(parts):
            crc = "<ChecksumCRC32>%s</ChecksumCRC32>" % _xml_escape(part[2]) if len(part) > 2 and part[2] else ""
            xml.append("<Part><PartNumber>%d</PartNumber><ETag>\"%s\"</ETag>%s</Part>" % (
                part[0], _xml_escape(part[1]), crc))
        body = ("<CompleteMultipartUpload>%s</CompleteMultipartUpload>" % "".join(xml)).encode("utf-8")
        headers = {}
        if checksum_crc32:
            headers["x-amz-checksum-crc32"] = checksum_crc32
        if checksum_type:
            headers["x-amz-checksum-type"] = checksum_type
        try:
            resp = self.request("CompleteMultipartUpload", "POST", bucket, key, query={"uploadId": upload_id},
                                body=body, headers=headers or None)
        except GpuWorkerError as err:
            if err.details.get("code") == "NoSuchUpload" and err.details.get("repeated"):
                return self._check_lost_complete(bucket, key, upload_id, parts)
            raise
        root = _parse_xml(resp.body)
        if root is None or _strip_ns(root.tag) == "Error":
            code = _xml_text(root, "Code", "") if root is not None else "unreadable reply"
            raise TransientError("completing the multipart upload of %s failed: %s" % (
                self._what(bucket, key), code))
        return (_xml_text(root, "ETag", "") or "").strip('"')

    def _check_lost_complete(self, bucket, key, upload_id, parts):
        """A repeated CompleteMultipartUpload answered NoSuchUpload: an earlier attempt whose reply was lost may
        have completed the upload. Accept the object (return its ETag) when its ETag is the multipart ETag of
        ``parts`` (MD5 of their binary MD5s + ``-N``); else raise an error naming the key."""
        from .checksums import multipart_etag  # not at the top: .checksums imports this module

        expected = multipart_etag([part[1] for part in sorted(parts)])
        try:
            found = self.head_object(bucket, key, checksum_mode=False)["etag"]
        except GpuWorkerError as err:
            if err.details.get("status") != 404:
                raise
            found = None
        if expected is not None and found == expected:
            return found
        if found is None:
            there = "no object is there"
        elif expected is None:
            there = "the object there (ETag %s) cannot be checked: the part ETags are not MD5s" % found
        else:
            there = "the object there has ETag %s, not %s (the multipart ETag of the %d parts sent)" % (
                found, expected, len(parts))
        raise GpuWorkerError(
            "completing the multipart upload of %s failed: the reply to CompleteMultipartUpload was lost, the "
            "server no longer knows upload %s and %s" % (self._what(bucket, key), upload_id, there),
            hint="another writer may have replaced the object or aborted the upload: run the upload again",
            details={"code": "NoSuchUpload", "key": key, "upload_id": upload_id, "etag": found,
                     "expected_etag": expected})

    def abort_multipart_upload(self, bucket, key, upload_id):
        self.request("AbortMultipartUpload", "DELETE", bucket, key, query={"uploadId": upload_id},
                     ok=(200, 204, 404))

    def delete_object(self, bucket, key):
        self.request("DeleteObject", "DELETE", bucket, key, ok=(200, 204))

    def delete_objects(self, bucket, keys):
        """Delete up to any number of keys (batches of 1000); raises on the first per-key error."""
        keys = list(keys)
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            xml = "".join("<Object><Key>%s</Key></Object>" % _xml_escape(k) for k in batch)
            body = ("<Delete><Quiet>true</Quiet>%s</Delete>" % xml).encode("utf-8")
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode("ascii")  # noqa: S324 - Content-MD5
            resp = self.request("DeleteObjects", "POST", bucket, query={"delete": ""},
                                headers={"content-md5": md5, "content-type": "application/xml"}, body=body)
            root = _parse_xml(resp.body)
            if root is None:
                continue
            for child in root:
                if _strip_ns(child.tag) == "Error":
                    raise GpuWorkerError("deleting '%s' from bucket '%s' on %s failed: %s" % (
                        _xml_text(child, "Key", "?"), bucket, self.endpoint, _xml_text(child, "Code", "?")))


def _put_headers(content_type, metadata):
    headers = {}
    if content_type:
        headers["content-type"] = content_type
    for name, value in (metadata or {}).items():
        headers["x-amz-meta-" + name.lower()] = encode_metadata_value(value)
    return headers


def _object_info(resp):
    size = resp.header("content-length")
    crange = resp.header("content-range")
    if crange and "/" in crange:
        total = crange.rsplit("/", 1)[1]
        if total.isdigit():
            size = total
    checksums = {}
    for algo in CHECKSUM_ALGORITHMS:
        value = resp.header("x-amz-checksum-" + algo)
        if value:
            checksums[algo] = value
    parts = resp.header("x-amz-mp-parts-count")
    return {
        "size": int(size) if size and str(size).isdigit() else None,
        "content_length": int(resp.header("content-length") or 0),
        "etag": resp.etag,
        "last_modified": resp.header("last-modified"),
        "content_type": resp.header("content-type"),
        "metadata": resp.metadata(),
        "checksums": checksums,
        "checksum_type": resp.header("x-amz-checksum-type"),
        "parts_count": int(parts) if parts and parts.isdigit() else None,
    }


def _error_code(status, body, headers):
    code = headers.get("x-minio-error-code") or headers.get("x-amz-error-code") or ""
    message = headers.get("x-minio-error-desc") or ""
    root = _parse_xml(body) if body else None
    if root is not None:
        code = _xml_text(root, "Code", code) or code
        message = _xml_text(root, "Message", message) or message
    if not code:
        code = {400: "BadRequest", 403: "AccessDenied", 404: "NotFound", 405: "MethodNotAllowed",
                409: "Conflict", 412: "PreconditionFailed", 416: "InvalidRange",
                429: "SlowDown", 503: "SlowDown"}.get(status, "")
    return code, message.strip('"')


def _describe_error(err):
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "timed out"
    text = str(err) or err.__class__.__name__
    return text
