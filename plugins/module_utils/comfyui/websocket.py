# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small blocking websocket client (RFC 6455): enough for ComfyUI's ``/ws`` progress messages. Stdlib only."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import os
import socket
import ssl
import struct
import time
from urllib.parse import urlsplit

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketClosed(Exception):
    """The websocket is closed (close frame, EOF, or protocol error)."""


class WebSocket:
    """A blocking websocket client connection. ``recv(timeout)`` returns ``(opcode, payload)`` or None."""

    OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

    def __init__(self, url, timeout=10.0, ssl_context=None):
        parts = urlsplit(url)
        secure = parts.scheme in ("wss", "https")
        host = parts.hostname
        port = parts.port or (443 if secure else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self._buf = b""
        self._frag_op = None
        self._frag = []
        self.closed = False
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if secure:
                ctx = ssl_context or ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=host)
            self.sock = sock
            self._handshake(host, port, path, secure, timeout)
        except Exception:
            sock.close()
            raise

    def _handshake(self, host, port, path, secure, timeout):
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        default_port = 443 if secure else 80
        host_header = host if port == default_port else "%s:%d" % (host, port)
        if ":" in host and not host.startswith("["):
            host_header = "[%s]" % host if port == default_port else "[%s]:%d" % (host, port)
        request = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host_header, key))
        self.sock.sendall(request.encode("ascii"))
        deadline = time.time() + timeout
        while b"\r\n\r\n" not in self._buf:
            if len(self._buf) > 65536:
                raise WebSocketClosed("websocket handshake answer too long")
            self._read_some(deadline)
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            raise WebSocketClosed("websocket upgrade refused: %s" % lines[0])
        headers = {}
        for line in lines[1:]:
            name, _sep, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode("ascii")).digest())  # noqa: S324
        if headers.get("sec-websocket-accept", "").encode("ascii") != expected:
            raise WebSocketClosed("websocket handshake: bad Sec-WebSocket-Accept")

    def _read_some(self, deadline):
        remaining = deadline - time.time() if deadline is not None else None
        if remaining is not None and remaining <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise WebSocketClosed("connection closed by the server")
        self._buf += data

    def _parse_frame(self):
        """One complete frame from the buffer as (fin, opcode, payload), or None when incomplete."""
        buf = self._buf
        if len(buf) < 2:
            return None
        b1, b2 = struct.unpack("!BB", buf[:2])
        fin, opcode, masked, length = b1 & 0x80, b1 & 0x0F, b2 & 0x80, b2 & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = struct.unpack("!H", buf[2:4])[0]
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = struct.unpack("!Q", buf[2:10])[0]
            pos = 10
        mask = None
        if masked:
            if len(buf) < pos + 4:
                return None
            mask = buf[pos:pos + 4]
            pos += 4
        if len(buf) < pos + length:
            return None
        payload = buf[pos:pos + length]
        if mask:
            payload = _apply_mask(payload, mask)
        self._buf = buf[pos + length:]
        return bool(fin), opcode, payload

    def send(self, payload, opcode=OP_TEXT):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        header = struct.pack("!B", 0x80 | opcode)
        length = len(payload)
        if length < 126:
            header += struct.pack("!B", 0x80 | length)
        elif length < 65536:
            header += struct.pack("!BH", 0x80 | 126, length)
        else:
            header += struct.pack("!BQ", 0x80 | 127, length)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + _apply_mask(payload, mask))

    def recv(self, timeout=None):
        """The next data message ``(opcode, bytes)``; None on timeout; WebSocketClosed when closed."""
        deadline = time.time() + timeout if timeout is not None else None
        while True:
            if self.closed:
                raise WebSocketClosed("websocket closed")
            frame = self._parse_frame()
            if frame is None:
                try:
                    self._read_some(deadline)
                except socket.timeout:
                    return None
                except (OSError, ValueError) as err:
                    self.closed = True
                    raise WebSocketClosed(str(err)) from err
                continue
            fin, opcode, payload = frame
            if opcode == self.OP_PING:
                self._safe_send(payload, self.OP_PONG)
            elif opcode == self.OP_PONG:
                continue
            elif opcode == self.OP_CLOSE:
                self._safe_send(payload[:2], self.OP_CLOSE)
                self.closed = True
                raise WebSocketClosed("close frame from the server")
            elif opcode == self.OP_CONT:
                if self._frag_op is None:
                    self.closed = True
                    raise WebSocketClosed("unexpected continuation frame")
                self._frag.append(payload)
                if fin:
                    op, data = self._frag_op, b"".join(self._frag)
                    self._frag_op, self._frag = None, []
                    return op, data
            elif opcode in (self.OP_TEXT, self.OP_BINARY):
                if fin:
                    return opcode, payload
                self._frag_op, self._frag = opcode, [payload]
            else:
                self.closed = True
                raise WebSocketClosed("unknown websocket opcode %d" % opcode)

    def _safe_send(self, payload, opcode):
        try:
            self.send(payload, opcode)
        except (OSError, ValueError):
            self.closed = True

    def close(self):
        if not self.closed:
            self._safe_send(struct.pack("!H", 1000), self.OP_CLOSE)
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def _apply_mask(data, mask):
    if not data:
        return data
    # XOR with the repeated 4-byte key, as one big-integer operation (fast without numpy).
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
