# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP routes (ComfyUI's API, also under /api/...) and the /ws upgrade, on http.server."""
from __future__ import annotations

import email.utils
import json
import logging
import mimetypes
import os
import platform
import socket
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from . import __version__
from .executor import SENSITIVE_KEYS, NodeContext
from .nodes import object_info
from .paths import MODEL_FOLDERS
from .validation import Validator
from .websocket import Client, accept_key

log = logging.getLogger("standin.http")
JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
PROXY_PAGE = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
              b"</h1></center>\r\n<hr><center>proxy (comfyui-standin fault)</center>\r\n</body>\r\n</html>\r\n")
INDEX_PAGE = (b"<!doctype html><html><head><title>ComfyUI stand-in</title></head><body><p>ComfyUI API stand-in "
              b"for tests; see README.md.</p></body></html>")

GET_ROUTES = {"/", "/system_stats", "/queue", "/prompt", "/features", "/object_info", "/models", "/embeddings",
              "/history", "/view", "/ws", "/extensions", "/standin/state"}
POST_ROUTES = {"/prompt", "/queue", "/interrupt", "/history", "/free", "/standin/control"}
HTML_FAULT_ROUTES = ("/queue", "/history")


class BadJSON(Exception):
    pass


def _meminfo():
    values = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    total = values.get("MemTotal", 8 << 30)
    return total, values.get("MemAvailable", values.get("MemFree", total // 2))


class App:
    """Everything the request handlers share."""

    def __init__(self, config, layout, hub, engine, faults):
        self.config, self.layout, self.hub, self.engine, self.faults = config, layout, hub, engine, faults
        self.validator = Validator(layout, lambda node_id: NodeContext(engine, node_id))
        self.features = {"supports_preview_metadata": True,
                         "max_upload_size": int(config.max_upload_size * 1024 * 1024)}

    def system_stats(self):
        total, free = _meminfo()
        if self.config.gpu_name:
            vram = 24 << 30
            device = {"name": f"cuda:0 {self.config.gpu_name} : cudaMallocAsync", "type": "cuda", "index": 0,
                      "vram_total": vram, "vram_free": vram - (512 << 20), "torch_vram_total": 0,
                      "torch_vram_free": 0}
        else:
            device = {"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                      "torch_vram_total": total, "torch_vram_free": free}
        return {"system": {"os": os.name, "ram_total": total, "ram_free": free,
                           "comfyui_version": self.config.comfyui_version,
                           "required_frontend_version": "1.27.10", "installed_templates_version": "0.1.95",
                           "required_templates_version": "0.1.95",
                           "python_version": sys.version, "pytorch_version": f"none (comfyui-standin {__version__})",
                           "embedded_python": False, "argv": [os.path.basename(sys.argv[0])] + sys.argv[1:]},
                "devices": [device]}

    def state(self):
        running, pending = self.engine.current_queue()
        with self.hub.lock:
            clients = sorted(self.hub.clients)
        return {"standin_version": __version__, "faults": self.faults.snapshot(), "number": self.engine.number,
                "queue_running": [i[1] for i in running], "queue_pending": [i[1] for i in pending],
                "history": len(self.engine.history), "executed": self.engine.executed_total,
                "ws_clients": clients, "base_dir": self.layout.base_dir, "output_dir": self.layout.output_dir,
                "pid": os.getpid()}

    # ------------------------------------------------------------------------------------- POST /prompt
    def post_prompt(self, body):
        if not isinstance(body, (dict, list, str)):
            raise BadJSON("not an object")
        if isinstance(body, dict) and "number" in body:
            try:
                number = float(body["number"])
            except (TypeError, ValueError):
                raise BadJSON("bad number") from None
        else:
            number = self.engine.next_number(isinstance(body, dict) and bool(body.get("front")))
        if not isinstance(body, dict) or "prompt" not in body:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return 400, {"error": error, "node_errors": {}}
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        ok, error, outputs, node_errors = self.validator.validate_prompt(prompt, body.get("partial_execution_targets"))
        extra_data = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not ok:
            log.warning("invalid prompt: %s", error)
            return 400, {"error": error, "node_errors": node_errors}
        log.info("got prompt %s", prompt_id)
        sensitive = {k: extra_data.pop(k) for k in SENSITIVE_KEYS if k in extra_data}
        self.engine.put((number, prompt_id, prompt, extra_data, outputs, sensitive))
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "comfyui-standin/" + __version__
    sys_version = f"Python/{platform.python_version()}"
    app: App = None  # set by make_server

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    # ------------------------------------------------------------------------------------- plumbing
    def _send(self, status, body=b"", content_type=None, headers=None, close=False):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, obj, status=200):
        self._send(status, json.dumps(obj).encode("utf-8"), JSON_TYPE)

    def send_text(self, status, text, close=False):
        self._send(status, text.encode("utf-8"), TEXT_TYPE, close=close)

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json_body(self, raw):
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadJSON("malformed JSON") from None

    def _route(self):
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if path.startswith("/api/"):
            path = path[4:]
        if len(path) > 1:
            path = path.rstrip("/") or "/"
        return path, {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_HEAD(self):  # noqa: N802
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self):  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self):  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method):
        path, query = self._route()
        raw = self._read_body()
        base = "/" + path.split("/")[1] if path.count("/") > 1 else path
        known_get = path in GET_ROUTES or base in ("/object_info", "/models", "/history")
        known_post = path in POST_ROUTES
        if (method == "GET" and not known_get) or (method == "POST" and not known_post) or \
                method not in ("GET", "POST"):
            if known_get or known_post:
                allow = ", ".join(m for m, ok in (("GET", known_get), ("HEAD", known_get), ("POST", known_post))
                                  if ok)
                self._send(405, b"405: Method Not Allowed", TEXT_TYPE, {"Allow": allow})
            else:
                self.send_text(404, "404: Not Found")
            return
        if base in HTML_FAULT_ROUTES and self.app.faults.take_html_response():
            self._send(502, PROXY_PAGE, "text/html")
            return
        try:
            if method == "GET":
                self._get(path, query)
            else:
                self._post(path, query, raw)
        except BadJSON as exc:
            log.error("Error handling request %s %s: %s", method, self.path, exc)
            self.send_text(500, "500 Internal Server Error\n\nServer got itself in trouble", close=True)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - same answer aiohttp gives for a handler crash
            log.exception("Error handling request %s %s", method, self.path)
            self.send_text(500, "500 Internal Server Error\n\nServer got itself in trouble", close=True)

    # ------------------------------------------------------------------------------------- GET
    def _get(self, path, query):
        app = self.app
        if path == "/ws":
            return self._websocket(query)
        if path == "/":
            return self._send(200, INDEX_PAGE, "text/html")
        if path == "/system_stats":
            return self.send_json(app.system_stats())
        if path == "/queue":
            running, pending = app.engine.current_queue()
            return self.send_json({"queue_running": running, "queue_pending": pending})
        if path == "/prompt":
            return self.send_json(app.engine.queue_info())
        if path == "/features":
            return self.send_json(app.features)
        if path == "/extensions":
            return self.send_json([])
        if path == "/object_info":
            return self.send_json(object_info(app.layout))
        if path.startswith("/object_info/"):
            return self.send_json(object_info(app.layout, path[len("/object_info/"):]))
        if path == "/models":
            return self.send_json(list(MODEL_FOLDERS))
        if path.startswith("/models/"):
            folder = path[len("/models/"):]
            if folder not in MODEL_FOLDERS:
                return self._send(404)
            return self.send_json(app.layout.list_models(folder))
        if path == "/embeddings":
            return self.send_json([os.path.splitext(n)[0] for n in app.layout.list_models("embeddings")])
        if path == "/history":
            max_items = int(query["max_items"]) if query.get("max_items") else None
            offset = int(query["offset"]) if query.get("offset") else -1
            return self.send_json(app.engine.get_history(max_items=max_items, offset=offset))
        if path.startswith("/history/"):
            return self.send_json(app.engine.get_history(prompt_id=path[len("/history/"):]))
        if path == "/view":
            return self._view(query)
        if path == "/standin/state":
            return self.send_json(app.state())
        return self.send_text(404, "404: Not Found")

    def _view(self, query):
        layout = self.app.layout
        if "filename" not in query:
            return self._send(404)
        filename, folder = layout.annotated(query["filename"])
        if not filename:
            return self._send(400)
        if filename[0] == "/" or ".." in filename:
            return self._send(400)
        if folder is None:
            folder = layout.directory_by_type(query.get("type", "output"))
        if folder is None:
            return self._send(400)
        if "subfolder" in query:
            full = os.path.join(folder, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full), folder)) != folder:
                return self._send(403)
            folder = full
        filename = os.path.basename(filename)
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            return self._send(404)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript",
                            "text/css"}:
            content_type = "application/octet-stream"
        st = os.stat(path)
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        headers = {"Content-Disposition": f'filename="{filename}"', "Etag": etag,
                   "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True), "Accept-Ranges": "bytes"}
        if self.headers.get("If-None-Match") == etag:
            return self._send(304, b"", None, headers)
        with open(path, "rb") as fh:
            data = fh.read()
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and "," not in rng:
            start_s, _, end_s = rng[6:].partition("-")
            try:
                start = int(start_s) if start_s else max(len(data) - int(end_s), 0)
                end = min(int(end_s), len(data) - 1) if start_s and end_s else len(data) - 1
            except ValueError:
                start, end = 0, -1
            if 0 <= start <= end:
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self._send(206, data[start:end + 1], content_type, headers)
        return self._send(200, data, content_type, headers)

    # ------------------------------------------------------------------------------------- POST
    def _post(self, path, query, raw):
        app = self.app
        if path == "/prompt":
            status, body = app.post_prompt(self._json_body(raw))
            return self.send_json(body, status)
        if path == "/queue":
            body = self._json_body(raw)
            if isinstance(body, dict) and body.get("clear"):
                app.engine.wipe_queue()
            if isinstance(body, dict) and "delete" in body:
                for prompt_id in body["delete"]:
                    app.engine.delete_queue_item(prompt_id)
            return self._send(200)
        if path == "/interrupt":
            # ComfyUI: request.json(), {} on a JSONDecodeError (empty or malformed body); json_data.get() then fails
            # (HTTP 500) on JSON that is not an object; a text that is not UTF-8 fails before the JSON decoding.
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadJSON("body is not UTF-8") from None
            try:
                body = json.loads(text)
            except ValueError:
                body = {}
            if not isinstance(body, dict):
                raise BadJSON("'%s' object has no attribute 'get'" % type(body).__name__)
            app.engine.interrupt(body.get("prompt_id"))
            return self._send(200)
        if path == "/history":
            body = self._json_body(raw)
            if isinstance(body, dict) and body.get("clear"):
                app.engine.wipe_history()
            if isinstance(body, dict) and "delete" in body:
                for prompt_id in body["delete"]:
                    app.engine.delete_history_item(prompt_id)
            return self._send(200)
        if path == "/free":
            self._json_body(raw)
            return self._send(200)
        if path == "/standin/control":
            try:
                body = self._json_body(raw) if raw.strip() else {}
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                app.faults.update(body)
            except (BadJSON, ValueError) as exc:
                return self.send_json({"error": str(exc)}, 400)
            log.warning("faults now %s", app.faults.snapshot())
            return self.send_json(app.state())
        return self.send_text(404, "404: Not Found")

    # ------------------------------------------------------------------------------------- websocket
    def _websocket(self, query):
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            upgrade = self.headers.get("Upgrade")
            return self.send_text(400, f'No WebSocket UPGRADE hdr: {upgrade}\n Can "Upgrade" only to "WebSocket".')
        if self.headers.get("Sec-WebSocket-Version", "13") != "13":
            return self._send(426, b"", None, {"Sec-WebSocket-Version": "13"})
        self.close_connection = True
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode("ascii"))
        app = self.app
        sid = query.get("clientId") or uuid.uuid4().hex
        client = Client(self.connection, self.rfile, sid)
        # As ComfyUI does: register the socket, then greet it, so that a client that got "status" gets every later
        # message. Holding the client's send lock keeps the delivery thread from reaching it before the greeting.
        with client.lock:
            app.hub.add(client)
            app.hub.send_now(client, "status", {"status": app.engine.queue_info(), "sid": sid})
            if app.engine.client_id == sid and app.engine.last_node_id is not None:
                app.hub.send_now(client, "executing", {"node": app.engine.last_node_id})
        log.info("websocket client %s connected", sid)
        try:
            client.receive_loop(self._ws_text)
        finally:
            app.hub.remove(client)
            log.info("websocket client %s disconnected", sid)

    def _ws_text(self, client, text):
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if isinstance(msg, dict) and msg.get("type") == "feature_flags":
            client.features = msg.get("data") or {}
            self.app.hub.send_now(client, "feature_flags", self.app.features)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class Server6(Server):
    address_family = socket.AF_INET6

    def server_bind(self):
        # "--listen" alone means "0.0.0.0,::": keep the IPv6 socket from also claiming the IPv4 port.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


def make_server(app, host, port):
    handler = type("BoundHandler", (Handler,), {"app": app})
    return (Server6 if ":" in host else Server)((host, port), handler)
