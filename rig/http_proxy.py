# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small forwarding HTTP proxy for the tests (stdlib only): plain HTTP requests with an absolute URI are
forwarded, CONNECT is tunnelled. Each request's method, host:port and path go to a log file, one line each
(``GET mirror.test:8080 /repo.git/info/refs``), written before it is forwarded.

Bounded: it connects only to the hosts of ``--allow`` (``NAME=ADDRESS``; a name ending in ``.test`` stands for a
local server that only the proxy can resolve, so a request that reaches that server came through the proxy) and
answers 403 for any other host; nothing leaves the machine.

    python rig/http_proxy.py --port 0 --log proxy.log --allow mirror.test=127.0.0.1 --port-file port
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


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request a connection: simple and enough for pip, git and apt
    server_version = "visionsuit-test-proxy"

    def log_message(self, fmt, *args):  # quiet: the log file is the record
        pass

    def _record(self, host, port, path):
        with self.server.log_lock, open(self.server.log_path, "a", encoding="utf-8") as log:
            log.write("%s %s:%d %s\n" % (self.command, host, port, path))

    def _target(self, host):
        return self.server.allow.get(host.lower())

    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        port = int(port or 443)
        self._record(host, port, "")
        address = self._target(host)
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
        address = self._target(url.hostname)
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
            lines = ["%s %s HTTP/1.0" % (self.command, path)]
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

    def __init__(self, address, log_path, allow):
        super().__init__(address, ProxyHandler)
        self.log_path = log_path
        self.log_lock = threading.Lock()
        self.allow = {name.lower(): target for name, target in allow.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True, help="file each request is recorded in")
    parser.add_argument("--allow", action="append", default=[], metavar="NAME=ADDRESS",
                        help="a host the proxy connects to, and the address it connects to for it")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args(argv)
    allow = dict(item.split("=", 1) for item in args.allow)
    server = ProxyServer((args.bind, args.port), args.log, allow)
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
