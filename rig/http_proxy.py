# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small forwarding HTTP proxy for the tests (stdlib only): plain HTTP requests with an absolute URI are
forwarded, CONNECT is tunnelled. Each request's method, host:port and path go to a log file, one line each
(``GET mirror.test:8080 /repo.git/info/refs``), written before it is forwarded.

Bounded: it connects only to the hosts of ``--allow`` (``NAME=ADDRESS``; a name ending in ``.test`` stands for a
local server that only the proxy can resolve, so a request that reaches that server came through the proxy) and of
``--pass`` (``HOST``: forwarded to the real HOST, resolved as usual, on port 80 or 443 only; for the Debian mirror
the test containers' apt already uses), and answers 403 for any other host or port. With ``--log-client`` each line
ends with `` from ADDRESS``, the client's address.

    python rig/http_proxy.py --port 0 --log proxy.log --allow mirror.test=127.0.0.1 --port-file port
    python rig/http_proxy.py --port 0 --log proxy.log --allow mirror.test=10.88.0.1 --pass deb.debian.org
"""
from __future__ import annotations

import argparse
import http.server
import select
import socket
import sys
import threading
import urllib.parse

CHUNK = 65536
PASS_PORTS = (80, 443)


def target(host, port, allow, passthrough):
    """The address the proxy connects to for host:port, or None (refused): an ``--allow`` name's address on any
    port, a ``--pass`` host itself (resolved as usual) on port 80 or 443. Names compare case-insensitively, the
    trailing dot of a fully qualified name ignored; ``allow``'s keys and ``passthrough`` are lower case."""
    name = host.lower().rstrip(".")
    if name in allow:
        return allow[name]
    if name in passthrough and port in PASS_PORTS:
        return name
    return None


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request a connection: simple and enough for pip, git and apt
    server_version = "visionsuit-test-proxy"

    def log_message(self, fmt, *args):  # quiet: the log file is the record
        pass

    def _record(self, host, port, path):
        line = "%s %s:%d %s" % (self.command, host, port, path)
        if self.server.log_client:
            line += " from %s" % self.client_address[0]
        with self.server.log_lock, open(self.server.log_path, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def _target(self, host, port):
        return target(host, port, self.server.allow, self.server.passthrough)

    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        try:
            port = int(port or 443)
        except ValueError:
            self.send_error(400, "host:port expected")
            return
        self._record(host, port, "")
        address = self._target(host, port)
        if address is None:
            self.send_error(403, "host not allowed by the test proxy")
            return
        try:
            upstream = socket.create_connection((address, port), timeout=30)
        except OSError:
            self.send_error(502)
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        sockets = [self.connection, upstream]
        try:
            while True:
                readable, _, broken = select.select(sockets, [], sockets, 60)
                if broken or not readable:
                    break
                for sock in readable:
                    data = sock.recv(CHUNK)
                    if not data:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()

    def _forward(self):
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            self.send_error(400, "absolute http:// URI expected")
            return
        port = url.port or 80
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        self._record(url.hostname, port, path)
        address = self._target(url.hostname, port)
        if address is None:
            self.send_error(403, "host not allowed by the test proxy")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            upstream = socket.create_connection((address, port), timeout=30)
        except OSError:
            self.send_error(502)
            return
        try:
            # the client's HTTP version (some servers refuse 1.0 with 426); Connection: close ends the response
            lines = ["%s %s %s" % (self.command, path, self.request_version)]
            for name, value in self.headers.items():
                if name.lower() not in ("proxy-connection", "connection", "keep-alive", "proxy-authorization"):
                    lines.append("%s: %s" % (name, value))
            lines.append("Connection: close")
            upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            while True:
                data = upstream.recv(CHUNK)
                if not data:
                    break
                self.wfile.write(data)
        finally:
            upstream.close()
        self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = _forward


class ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, log_path, allow, passthrough=(), log_client=False):
        super().__init__(address, ProxyHandler)
        self.log_path = log_path
        self.log_lock = threading.Lock()
        self.allow = {name.lower().rstrip("."): address for name, address in allow.items()}
        self.passthrough = frozenset(name.lower().rstrip(".") for name in passthrough)
        self.log_client = log_client


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True, help="file each request is recorded in")
    parser.add_argument("--allow", action="append", default=[], metavar="NAME=ADDRESS",
                        help="a host the proxy connects to, and the address it connects to for it")
    parser.add_argument("--pass", dest="passthrough", action="append", default=[], metavar="HOST",
                        help="a real host the proxy forwards to (port 80 or 443), resolved as usual")
    parser.add_argument("--log-client", action="store_true", help="end each log line with ' from CLIENT-ADDRESS'")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args(argv)
    allow = dict(item.split("=", 1) for item in args.allow)
    server = ProxyServer((args.bind, args.port), args.log, allow, args.passthrough, args.log_client)
    if args.port_file:
        with open(args.port_file, "w", encoding="utf-8") as handle:
            handle.write(str(server.server_address[1]))
    print("proxy on %s:%d" % server.server_address[:2], flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
