# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The test proxy's bounds (rig/http_proxy.py): which requests it forwards, and where to. No network: the
decision function directly, and a loopback proxy for refused requests (a refused request connects nowhere)."""
from __future__ import annotations

import http.server
import socket
import threading

import pytest

from rig.http_proxy import ProxyServer, main, target

ALLOW = {"standin.test": "10.88.0.1"}
PASS = frozenset({"deb.debian.org"})


@pytest.mark.parametrize("host, port, expected", [
    ("standin.test", 41234, "10.88.0.1"),       # an --allow name: its address, any port
    ("STANDIN.test.", 80, "10.88.0.1"),          # case and the trailing dot of a full name do not matter
    ("deb.debian.org", 80, "deb.debian.org"),    # a --pass host: itself, resolved as usual
    ("deb.debian.org", 443, "deb.debian.org"),
    ("Deb.Debian.Org.", 80, "deb.debian.org"),
    ("deb.debian.org", 8080, None),              # a --pass host on another port: refused
    ("deb.debian.org", 22, None),
    ("security.debian.org", 80, None),           # any other host: refused
    ("debian.org", 80, None),
    ("evil.deb.debian.org", 80, None),           # no suffix matching
    ("127.0.0.1", 80, None),
    ("standin.test.evil", 80, None),
])
def test_target(host, port, expected):
    assert target(host, port, ALLOW, PASS) == expected


@pytest.fixture
def proxy(tmp_path):
    log = tmp_path / "proxy.log"
    log.write_text("")
    server = ProxyServer(("127.0.0.1", 0), str(log), {}, ["Deb.Debian.Org"], log_client=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], log
    finally:
        server.shutdown()
        server.server_close()


def _ask(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while True:
            data = sock.recv(4096)
            if not data:
                return reply
            reply += data


def test_refused_requests_are_logged_with_the_client(proxy):
    port, log = proxy
    assert _ask(port, b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n").startswith(b"HTTP/1.0 403")
    # the pass-through host, but not on 80/443
    assert _ask(port, b"GET http://deb.debian.org:8080/debian/ HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 403")
    assert _ask(port, b"CONNECT deb.debian.org:22 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 403")
    assert _ask(port, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 403")
    assert _ask(port, b"CONNECT example.com:https HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 400")
    assert log.read_text().splitlines() == [
        "GET example.com:80 /x from 127.0.0.1",
        "GET deb.debian.org:8080 /debian/ from 127.0.0.1",
        "CONNECT deb.debian.org:22  from 127.0.0.1",
        "CONNECT example.com:443  from 127.0.0.1",
    ]


class _VersionHandler(http.server.BaseHTTPRequestHandler):
    """An upstream that, like some mirrors' front ends, answers HTTP/1.0 requests with 426."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = self.request_version.encode()
        self.send_response(426 if self.request_version == "HTTP/1.0" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_forwarded_with_the_clients_http_version(tmp_path, version):
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _VersionHandler)
    server = ProxyServer(("127.0.0.1", 0), str(tmp_path / "log"), {"up.test": "127.0.0.1"})
    for each in (upstream, server):
        threading.Thread(target=each.serve_forever, daemon=True).start()
    try:
        reply = _ask(server.server_address[1], b"GET http://up.test:%d/ %s\r\nHost: up.test\r\n\r\n" % (
            upstream.server_address[1], version.encode()))
    finally:
        for each in (server, upstream):
            each.shutdown()
            each.server_close()
    assert reply.startswith(b"HTTP/1.1 426" if version == "HTTP/1.0" else b"HTTP/1.1 200"), reply
    assert reply.endswith(version.encode()), reply


def test_command_line(tmp_path, monkeypatch):
    """--pass and --log-client reach the server (serve_forever replaced: the test only looks at the settings)."""
    seen = {}

    def fake_serve(self):
        seen.update(allow=self.allow, passthrough=self.passthrough, log_client=self.log_client)

    monkeypatch.setattr(ProxyServer, "serve_forever", fake_serve)
    assert main(["--log", str(tmp_path / "log"), "--allow", "Standin.test=10.88.0.1", "--pass", "deb.debian.org",
                 "--pass", "Security.Debian.Org", "--log-client"]) == 0
    assert seen == {"allow": {"standin.test": "10.88.0.1"},
                    "passthrough": frozenset({"deb.debian.org", "security.debian.org"}), "log_client": True}
