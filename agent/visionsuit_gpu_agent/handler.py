# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Request handling without sockets: routing, allow-list, auth, size limit, validation -> (status, headers, body).

The HTTP server (:mod:`.server`) calls :func:`check_head` before it reads a body (so a request that is not
allowed, not authenticated or too large is answered without reading it), then :func:`handle`. Both take
an ``agent`` object with ``cfg``, ``health()``, ``submit(envelope)``, ``get_job(id)``, ``retry_after()``,
``drain(slot, timeout)``, ``resume(slot)`` and ``metrics`` (see :class:`.worker.Agent`); tests pass a fake one.

``POST /drain`` and ``POST /resume`` take an optional JSON body (``{"slot": i, "timeout": s}``, ``/resume`` only
``slot``); an empty body (or none) is ``{}``.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import math
import re

from .envelope import parse_body
from .worker import BadRequest, Conflict, Draining, DrainNotSaved, InvalidEnvelope, QueueFull

JSON = "application/json"
JOB_PATH = re.compile(r"^/jobs/([A-Za-z0-9][A-Za-z0-9._-]{0,127})$")
ROUTES = {"/healthz": ("GET", "HEAD"), "/metrics": ("GET",), "/jobs": ("POST",), "/drain": ("POST",),
          "/resume": ("POST",)}
CONTROL = ("/drain", "/resume")   # bodies optional
MAX_DRAIN_TIMEOUT = 3600


class Response:
    __slots__ = ("status", "headers", "body", "close")

    def __init__(self, status, body=b"", headers=None, close=False):
        self.status = status
        self.headers = list(headers or [])
        self.body = body
        self.close = close

    def __iter__(self):  # status, headers, body = response
        return iter((self.status, self.headers, self.body))

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def json_response(status, obj, headers=None, close=False):
    body = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return Response(status, body, [("Content-Type", JSON)] + list(headers or []), close=close)


def error(status, message, problems=None, headers=None, close=False):
    obj = {"error": message}
    if problems:
        obj["problems"] = problems
    return json_response(status, obj, headers, close=close)


def header(headers, name, default=None):
    """Case-insensitive lookup in a dict or an email.message.Message."""
    if hasattr(headers, "get_all"):
        value = headers.get(name)
        return default if value is None else value
    lname = name.lower()
    for key, value in headers.items():
        if key.lower() == lname:
            return value
    return default


def client_allowed(networks, client_ip):
    if not networks:
        return True
    try:
        addr = ipaddress.ip_address(str(client_ip).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for net in networks:
        network = ipaddress.ip_network(str(net), strict=False)
        if addr.version == network.version and addr in network:
            return True
    return False


def authorized(token, headers):
    value = header(headers, "Authorization") or ""
    scheme, _sep, given = value.partition(" ")
    if scheme.lower() != "bearer" or not given.strip() or not token:
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


def _route(path):
    if path in ROUTES:
        return path, ROUTES[path]
    if JOB_PATH.match(path):
        return "/jobs/<id>", ("GET",)
    return None, ()


def check_head(agent, method, path, headers, client_ip):
    """The answer to give before reading the body, or None to go on (read the body, call :func:`handle`)."""
    cfg = agent.cfg
    path = path.split("?", 1)[0]
    route, methods = _route(path)
    if route is None:
        return error(404, f"no such endpoint {path[:200]} (endpoints: GET /healthz, GET /metrics, POST /jobs, "
                          "GET /jobs/<id>, POST /drain, POST /resume)", close=method == "POST")
    if method not in methods:
        return error(405, f"{route} does not allow {method}", headers=[("Allow", ", ".join(methods))],
                     close=True)
    if route == "/healthz":
        return None
    if route == "/metrics":
        if cfg["server.metrics_require_auth"] and not authorized(cfg["server.api_token"], headers):
            return error(401, "missing or wrong bearer token", headers=[("WWW-Authenticate", 'Bearer realm="agent"')])
        return None
    if not client_allowed(cfg["server.allowed_networks"], client_ip):
        return error(403, f"client {client_ip} is not in server.allowed_networks", close=True)
    if not authorized(cfg["server.api_token"], headers):
        return error(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                     headers=[("WWW-Authenticate", 'Bearer realm="visionsuit-gpu-agent"')], close=True)
    if method == "POST":
        limit = cfg["server.max_body_bytes"]
        chunked = "chunked" in (header(headers, "Transfer-Encoding") or "").lower()
        length = header(headers, "Content-Length")
        if route in CONTROL and not chunked and (length is None or str(length).strip() == "0"):
            return None   # no body: {}
        if length is not None and not chunked:
            if not str(length).strip().isdigit():
                return error(400, f"invalid Content-Length {str(length)[:40]!r}", close=True)
            if int(length) > limit:
                return error(413, f"body of {length} bytes is over the limit of {limit} bytes (server.max_body_bytes)",
                             close=True)
        elif not chunked:
            return error(411, "a body with Content-Length (or chunked) is required", close=True)
        ctype = (header(headers, "Content-Type") or JSON).split(";", 1)[0].strip().lower()
        if ctype not in (JSON, "text/json", "application/*+json") and not ctype.endswith("+json"):
            what = "the envelope" if route == "/jobs" else "the body"
            return error(415, f"send {what} as application/json (got {ctype[:80]})", close=True)
    return None


def handle(agent, method, path, headers, body, client_ip):
    """Answer one request whose body (bytes, or None) has been read. Returns a :class:`Response`."""
    early = check_head(agent, method, path, headers, client_ip)
    if early is not None:
        return early
    path = path.split("?", 1)[0]
    if path == "/healthz":
        resp = json_response(200, agent.health(), headers=[("Cache-Control", "no-store")])
        if method == "HEAD":
            resp.body = b""
        return resp
    if path == "/metrics":
        return Response(200, agent.metrics.render().encode("utf-8"),
                        [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])
    if path == "/jobs":
        body = body or b""
        if len(body) > agent.cfg["server.max_body_bytes"]:
            return error(413, "body over the limit of {} bytes".format(agent.cfg["server.max_body_bytes"]), close=True)
        envelope, problems = parse_body(body)
        if problems:
            agent.metrics.inc("jobs_rejected_total", reason="malformed")
            return error(400, f"malformed request: {problems[0]}", problems)
        try:
            doc, created = agent.submit(envelope)
        except InvalidEnvelope as err:
            agent.metrics.inc("jobs_rejected_total", reason="invalid")
            return error(400, "invalid envelope: {} problem(s): {}".format(len(err.problems), "; ".join(err.problems)),
                         err.problems)
        except Conflict as err:
            agent.metrics.inc("jobs_rejected_total", reason="conflict")
            return error(409, str(err))
        except Draining as err:
            agent.metrics.inc("jobs_rejected_total", reason="draining")
            return json_response(503, {"error": str(err), "draining": True},
                                 headers=[("Retry-After", str(err.retry_after))])
        except QueueFull as err:
            agent.metrics.inc("jobs_rejected_total", reason="queue_full")
            return error(429, str(err), headers=[("Retry-After", str(agent.retry_after()))])
        location = [("Location", "/jobs/{}".format(doc["job_id"]))]
        return json_response(202 if created else 200, doc, headers=location)
    if path in CONTROL:
        return _control(agent, path, body)
    m = JOB_PATH.match(path)
    doc = agent.get_job(m.group(1))
    if doc is None:
        return error(404, f"no job {m.group(1)}")
    return json_response(200, doc, headers=[("Cache-Control", "no-store")])


def parse_control(path, body):
    """The body of ``POST /drain`` / ``POST /resume`` -> (options, problems). Empty: ``{}``."""
    body = body or b""
    if not body.strip():
        return {}, []
    doc, problems = parse_body(body)
    if problems:
        return None, problems
    if not isinstance(doc, dict):
        return None, ["body: must be an object such as {\"slot\": 0, \"timeout\": 600}"]
    allowed = ("slot", "timeout") if path == "/drain" else ("slot",)
    problems = ["{}: unknown key (allowed: {})".format(key[:40] if key.isprintable() else json.dumps(key[:40]),
                                                       ", ".join(allowed)) for key in doc if key not in allowed]
    slot = doc.get("slot")
    if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int) or slot < 0):
        problems.append("slot: must be a slot index (0, 1, ...) or null")
    timeout = doc.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or not 0 <= timeout <= MAX_DRAIN_TIMEOUT):
        problems.append(f"timeout: must be a number of seconds, 0-{MAX_DRAIN_TIMEOUT}")
    return doc, problems


def _control(agent, path, body):
    if len(body or b"") > agent.cfg["server.max_body_bytes"]:
        return error(413, "body over the limit of {} bytes".format(agent.cfg["server.max_body_bytes"]), close=True)
    options, problems = parse_control(path, body)
    if problems:
        return error(400, f"bad {path[1:]} request: {problems[0]}", problems)
    try:
        if path == "/drain":
            doc = agent.drain(slot=options.get("slot"), timeout=options.get("timeout"))
        else:
            doc = agent.resume(slot=options.get("slot"))
    except BadRequest as err:
        return error(400, str(err), [str(err)])
    except DrainNotSaved as err:
        return error(500, str(err))
    return json_response(200, doc, headers=[("Cache-Control", "no-store")])
