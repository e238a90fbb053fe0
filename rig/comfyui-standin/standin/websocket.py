# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Server side of RFC 6455 for /ws: handshake, frames, and a hub that delivers messages in order."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import queue
import select
import socket
import struct
import threading

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 16 * 1024 * 1024
log = logging.getLogger("standin.ws")


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")  # noqa: S324


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A server frame (never masked)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


class ProtocolError(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code


def _read_exact(rfile, n):
    data = rfile.read(n)
    if data is None or len(data) < n:
        raise ConnectionError("connection closed")
    return data


def read_frame(rfile):
    """(fin, opcode, payload) of one client frame; client frames must be masked."""
    b0, b1 = _read_exact(rfile, 2)
    if b0 & 0x70:
        raise ProtocolError(1002, "reserved bits set")
    fin, opcode, masked, n = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", _read_exact(rfile, 2))
    elif n == 127:
        (n,) = struct.unpack(">Q", _read_exact(rfile, 8))
    if not masked:
        raise ProtocolError(1002, "client frames must be masked")
    if n > MAX_MESSAGE:
        raise ProtocolError(1009, "message too big")
    mask = _read_exact(rfile, 4)
    payload = bytearray(_read_exact(rfile, n))
    for i in range(n):
        payload[i] ^= mask[i & 3]
    return fin, opcode, bytes(payload)


class Client:
    """One websocket connection; ``send_text`` may be called from any thread."""

    def __init__(self, sock, rfile, sid):
        self.sock, self.rfile, self.sid = sock, rfile, sid
        self.lock = threading.RLock()  # re-entrant: the greeting is sent while the connection is registered
        self.closed = False
        self.features = {}

    def _send(self, frame: bytes, timeout=10.0):
        with self.lock:
            if self.closed:
                return False
            try:
                _, writable, _ = select.select([], [self.sock], [], timeout)
                if not writable:
                    raise OSError("client does not read")
                self.sock.sendall(frame)
                return True
            except OSError:
                self.closed = True
                return False

    def send_text(self, text: str):
        return self._send(encode_frame(OP_TEXT, text.encode("utf-8")))

    def send_binary(self, payload: bytes):
        return self._send(encode_frame(OP_BINARY, payload))

    def send_close(self, code=1000, reason=""):
        ok = self._send(encode_frame(OP_CLOSE, struct.pack(">H", code) + reason.encode("utf-8")[:120]))
        with self.lock:
            self.closed = True
        return ok

    def drop(self):
        """Cut the TCP connection without a close frame (a network failure, as far as the client can tell)."""
        with self.lock:
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def receive_loop(self, on_text):
        """Read frames until the client closes; answer pings and close frames."""
        parts, first_op = [], None
        try:
            while not self.closed:
                fin, opcode, payload = read_frame(self.rfile)
                if opcode == OP_PING:
                    self._send(encode_frame(OP_PONG, payload[:125]))
                elif opcode == OP_PONG:
                    pass
                elif opcode == OP_CLOSE:
                    code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1000
                    self.send_close(code if code in (1000, 1001) else 1000)
                    break
                elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                    if opcode != OP_CONT:
                        parts, first_op = [], opcode
                    elif first_op is None:
                        raise ProtocolError(1002, "continuation without a start frame")
                    parts.append(payload)
                    if fin:
                        if first_op == OP_TEXT:
                            on_text(self, b"".join(parts).decode("utf-8", "replace"))
                        parts, first_op = [], None
                else:
                    raise ProtocolError(1002, f"unknown opcode {opcode}")
        except ProtocolError as exc:
            self.send_close(exc.code, str(exc))
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.closed = True


class Hub:
    """All connected clients plus one delivery thread, so messages leave in the order they were sent."""

    def __init__(self):
        self.clients = {}
        self.lock = threading.Lock()
        self.outbox = queue.Queue()
        self.on_delivered = None  # callable(message_tag, clients) after a tagged message went out
        self.thread = threading.Thread(target=self._deliver_loop, name="ws-deliver", daemon=True)
        self.thread.start()

    def add(self, client):
        with self.lock:
            old = self.clients.pop(client.sid, None)
            self.clients[client.sid] = client
        return old

    def remove(self, client):
        with self.lock:
            if self.clients.get(client.sid) is client:
                del self.clients[client.sid]

    def send(self, event, data, sid=None, tag=None):
        """Queue a message for ``sid`` (or everyone when sid is None)."""
        self.outbox.put((json.dumps({"type": event, "data": data}), sid, tag))

    def send_binary(self, payload: bytes, sid):
        """Queue a binary message (a preview image) for ``sid``, in order with the text messages."""
        self.outbox.put((bytes(payload), sid, None))

    def features_of(self, sid):
        with self.lock:
            client = self.clients.get(sid)
        return dict(client.features) if client is not None else {}

    def send_now(self, client, event, data):
        client.send_text(json.dumps({"type": event, "data": data}))

    def flush(self, timeout=2.0):
        done = threading.Event()
        self.outbox.put((None, None, done))
        done.wait(timeout)

    def _deliver_loop(self):
        while True:
            text, sid, tag = self.outbox.get()
            if text is None:
                if isinstance(tag, threading.Event):
                    tag.set()
                    continue
                return
            with self.lock:
                targets = list(self.clients.values()) if sid is None else (
                    [self.clients[sid]] if sid in self.clients else [])
            for client in targets:
                if isinstance(text, bytes):
                    client.send_binary(text)
                else:
                    client.send_text(text)
            if tag is not None and self.on_delivered is not None:
                try:
                    self.on_delivered(tag, targets)
                except Exception:  # noqa: BLE001 - never let a hook stop delivery
                    log.exception("delivery hook failed")

    def close_all(self, code=1001):
        with self.lock:
            clients = list(self.clients.values())
            self.clients.clear()
        for client in clients:
            client.send_close(code, "server shutting down")
            client.drop()

    def stop(self):
        self.outbox.put((None, None, None))
