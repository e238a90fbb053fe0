# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTTP(S) front: ``http.server.ThreadingHTTPServer`` with a request handler that delegates to :mod:`.handler`."""
from __future__ import annotations

import errno
import logging
import socket
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import __version__
from .handler import check_head, error, handle, header

log = logging.getLogger("visionsuit_gpu_agent.http")


class ListenError(Exception):
    """The server cannot be set up (port in use, bad TLS files); the message is one line for the operator."""


class BodyTooLarge(Exception):
    pass


class BadBody(Exception):
    pass


def read_chunked(rfile, limit):
    """Read a chunked body, refusing it as soon as it grows over ``limit`` bytes."""
    parts, total = [], 0
    while True:
        line = rfile.readline(1026)
        if not line.endswith(b"\n"):
            raise BadBody("chunk size line too long or connection closed")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadBody(f"invalid chunk size {size_text[:20]!r}") from None
        if size == 0:
            while True:  # trailers
                trailer = rfile.readline(8192)
                if trailer in (b"\r\n", b"\n", b""):
                    break
            return b"".join(parts)
        total += size
        if total > limit:
            raise BodyTooLarge()
        data = rfile.read(size)
        if len(data) != size:
            raise BadBody("connection closed inside a chunk")
        parts.append(data)
        rfile.readline(8)


class AgentRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "visionsuit-gpu-agent/" + __version__
    sys_version = ""

    def log_message(self, fmt, *args):  # access log at debug level (journald stays quiet)
        log.debug("%s %s", self.client_address[0], fmt % args)

    def _send(self, resp):
        status, headers, body = resp
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if resp.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        agent = self.server.agent
        route = self.path.split("?", 1)[0]
        route = "/jobs/<id>" if route.startswith("/jobs/") else route
        if route not in ("/healthz", "/metrics", "/jobs", "/jobs/<id>", "/drain", "/resume"):
            route = "other"
        agent.metrics.inc("http_requests_total", route=route, code=str(status))

    def _dispatch(self):
        agent = self.server.agent
        client_ip = self.client_address[0]
        try:
            early = check_head(agent, self.command, self.path, self.headers, client_ip)
            if early is not None:
                self._send(early)
                return
            body = None
            if self.command == "POST":
                limit = agent.cfg["server.max_body_bytes"]
                if "chunked" in (header(self.headers, "Transfer-Encoding") or "").lower():
                    try:
                        body = read_chunked(self.rfile, limit)
                    except BodyTooLarge:
                        self._send(error(413, f"chunked body over the limit of {limit} bytes (server.max_body_bytes)",
                                         close=True))
                        return
                    except BadBody as err:
                        self._send(error(400, f"bad chunked body: {err}", close=True))
                        return
                else:
                    length = int(header(self.headers, "Content-Length") or 0)
                    body = self.rfile.read(length)
                    if len(body) != length:
                        self.close_connection = True
                        return
            self._send(handle(agent, self.command, self.path, self.headers, body, client_ip))
        except (ConnectionError, socket.timeout, ssl.SSLError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - one bad request must not take the server down
            log.exception("error answering %s %s", self.command, self.path[:200])
            try:
                self._send(error(500, "internal error", close=True))
            except OSError:
                self.close_connection = True

    do_GET = _dispatch  # noqa: N815 - http.server's naming
    do_HEAD = _dispatch  # noqa: N815
    do_POST = _dispatch  # noqa: N815
    do_PUT = _dispatch  # noqa: N815
    do_DELETE = _dispatch  # noqa: N815
    do_PATCH = _dispatch  # noqa: N815


class AgentHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address, agent, ssl_context=None, timeout=30.0):
        self.agent = agent
        self.ssl_context = ssl_context
        self.client_timeout = timeout
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, AgentRequestHandler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(self.client_timeout)
        if self.ssl_context is not None:
            # the TLS handshake happens in the request thread (first read), not in the accept loop
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        log.debug("connection from %s ended with an error", client_address[0], exc_info=True)


def make_ssl_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def make_server(agent, host=None, port=None, cfg=None):
    """Bind and listen. ``agent`` may be None (set ``server.agent`` before serving), so that the supervisor
    binds the port before it touches any state; raises :class:`ListenError`."""
    cfg = agent.cfg if cfg is None else cfg
    ctx = None
    if cfg["server.tls_cert"]:
        try:
            ctx = make_ssl_context(cfg["server.tls_cert"], cfg["server.tls_key"])
        except (OSError, ValueError) as err:
            raise ListenError("cannot load server.tls_cert / server.tls_key: {}".format(
                getattr(err, "strerror", None) or err)) from err
    host = cfg["server.listen"] if host is None else host
    port = cfg["server.port"] if port is None else port
    try:
        return AgentHTTPServer((host, port), agent, ctx, cfg["server.threads_timeout"])
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ListenError(f"port {port} is in use (server.listen {host}): another agent or program listens "
                              "there") from err
        raise ListenError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
