# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The prompt queue, the worker that "executes" prompts, and the history."""
from __future__ import annotations

import copy
import heapq
import json
import logging
import os
import random
import struct
import threading
import time
import traceback
from collections import OrderedDict

from .faults import Faults
from .models import LoadError
from .nodes import NODES
from .png import encode_png, solid_rows
from .validation import _type_name, is_link

MAX_HISTORY = 10000
SENSITIVE_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
log = logging.getLogger("standin.exec")


class Interrupted(Exception):
    pass


class InjectedFailure(RuntimeError):
    pass


def now_ms():
    return int(time.time() * 1000)


class NodeContext:
    """What a node's run function may use."""

    def __init__(self, engine, node_id, prompt=None, extra_data=None, run=None):
        self.engine, self.layout, self.node_id = engine, engine.layout, node_id
        self.prompt, self.extra_data, self.run = prompt, extra_data or {}, run

    def progress(self, value, total):
        self.engine.check_interrupt()
        delay = self.engine.faults.snapshot()["delay"]
        if delay:
            time.sleep(delay / max(total, 1))
        if self.run is not None:
            self.run.progress(self.node_id, value, total)
            if self.engine.faults.snapshot()["previews"]:
                self.run.preview(self.node_id, value, total)


class Run:
    """Messages of one prompt execution (tagged so that drop_ws_after can count them)."""

    def __init__(self, engine, prompt_id, client_id):
        self.engine, self.prompt_id, self.client_id = engine, prompt_id, client_id
        self.messages, self.delivered, self.dropped = [], 0, False
        self.nodes = OrderedDict()

    def send(self, event, data):
        self.engine.hub.send(event, data, self.client_id, tag=self)

    def add_message(self, event, data, broadcast):
        data = dict(data, timestamp=now_ms())
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.send(event, data)

    def _node_state(self, node_id, value, total, state):
        self.nodes[node_id] = {"value": float(value), "max": float(total), "state": state, "node_id": node_id,
                               "prompt_id": self.prompt_id, "display_node_id": node_id, "parent_node_id": None,
                               "real_node_id": node_id}
        self.send("progress_state", {"prompt_id": self.prompt_id, "nodes": copy.deepcopy(self.nodes)})

    def start(self, node_id):
        self._node_state(node_id, 0, 1, "running")

    def finish(self, node_id):
        self._node_state(node_id, 1, 1, "finished")

    def progress(self, node_id, value, total):
        self._node_state(node_id, value, total, "running")
        self.send("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id})


    def preview(self, node_id, value, total):
        """A binary preview frame after a sampling step, as ComfyUI sends with ``--preview-method`` on: a client
        that announced ``supports_preview_metadata`` gets event 4 (PREVIEW_IMAGE_WITH_METADATA: 4-byte length
        + JSON + image), any other event 1 (PREVIEW_IMAGE: 4-byte format 1 = JPEG / 2 = PNG + image)."""
        if self.client_id is None:
            return
        shade = int(255 * value / max(total, 1))
        image = encode_png(8, 8, solid_rows(8, 8, (shade, shade, 255 - shade)))
        if self.engine.hub.features_of(self.client_id).get("supports_preview_metadata"):
            meta = json.dumps({"node_id": node_id, "prompt_id": self.prompt_id, "display_node_id": node_id,
                               "parent_node_id": None, "real_node_id": node_id,
                               "image_type": "image/png"}).encode("utf-8")
            payload = struct.pack(">II", 4, len(meta)) + meta + image
        else:
            payload = struct.pack(">II", 1, 2) + image
        self.engine.hub.send_binary(payload, self.client_id)


class Engine:
    def __init__(self, layout, hub, faults: Faults, cache=True):
        self.layout, self.hub, self.faults, self.use_cache = layout, hub, faults, cache
        self.cond = threading.Condition(threading.RLock())
        self.number = 0
        self.queue = []          # heap of (number, prompt_id, prompt, extra_data, outputs, sensitive)
        self.running = {}        # prompt_id -> item
        self.history = OrderedDict()
        self.interrupted = threading.Event()
        self.client_id = None
        self.last_node_id = None
        self.cache = {}          # node signature -> (outputs, ui)
        self.stopping = False
        self.executed_total = 0
        self.hub.on_delivered = self._delivered
        self.thread = threading.Thread(target=self._worker, name="prompt-worker", daemon=True)

    # ----------------------------------------------------------------------------- queue
    def start(self):
        self.thread.start()

    def stop(self):
        with self.cond:
            self.stopping = True
            self.interrupted.set()
            self.cond.notify_all()

    def queue_remaining(self):
        with self.cond:
            return len(self.queue) + len(self.running)

    def queue_info(self):
        return {"exec_info": {"queue_remaining": self.queue_remaining()}}

    def queue_updated(self):
        self.hub.send("status", {"status": self.queue_info()})

    def next_number(self, front):
        with self.cond:
            number = -self.number if front else self.number
            self.number += 1
            return number

    def put(self, item):
        with self.cond:
            heapq.heappush(self.queue, item)
            self.queue_updated()
            self.cond.notify_all()

    def current_queue(self):
        with self.cond:
            running = [list(copy.deepcopy(i[:5])) for i in self.running.values()]
            pending = [list(copy.deepcopy(i[:5])) for i in self.queue]
            return running, pending

    def wipe_queue(self):
        with self.cond:
            self.queue = []
            self.queue_updated()

    def delete_queue_item(self, prompt_id):
        with self.cond:
            for i, item in enumerate(self.queue):
                if item[1] == prompt_id:
                    self.queue.pop(i)
                    heapq.heapify(self.queue)
                    self.queue_updated()
                    return True
            return False

    def interrupt(self, prompt_id=None):
        """POST /interrupt as ComfyUI 0.3.64: with a prompt id, only when that prompt is the running one (else
        skipped); without one (or an empty one), global: it stops whatever runs, another client's prompt too.
        The flag is cleared when the next prompt starts, and it takes effect between nodes (or progress steps)."""
        with self.cond:
            if prompt_id:
                if not any(item[1] == prompt_id for item in self.running.values()):
                    log.info("Prompt %s is not currently running, skipping interrupt", prompt_id)
                    return False
                log.info("Interrupting prompt %s", prompt_id)
            else:
                log.info("Global interrupt (no prompt_id specified)")
            self.interrupted.set()
        return True

    def check_interrupt(self):
        if self.interrupted.is_set():
            raise Interrupted()

    # ----------------------------------------------------------------------------- history
    def get_history(self, prompt_id=None, max_items=None, offset=-1):
        with self.cond:
            if prompt_id is not None:
                return {prompt_id: copy.deepcopy(self.history[prompt_id])} if prompt_id in self.history else {}
            keys = list(self.history)
            if offset < 0 and max_items is not None:
                offset = len(keys) - max_items
            offset = max(offset, 0)
            keys = keys[offset:]
            if max_items is not None:
                keys = keys[:max(max_items, 0)]
            return {k: copy.deepcopy(self.history[k]) for k in keys}

    def wipe_history(self):
        with self.cond:
            self.history.clear()

    def delete_history_item(self, prompt_id):
        with self.cond:
            self.history.pop(prompt_id, None)

    # ----------------------------------------------------------------------------- worker
    def _delivered(self, tag, clients):
        if not isinstance(tag, Run):
            return
        limit = self.faults.snapshot()["drop_ws_after"]
        tag.delivered += 1
        if limit is not None and not tag.dropped and tag.delivered >= limit:
            tag.dropped = True
            log.warning("fault drop_ws_after=%d: cutting %d websocket connection(s)", limit, len(clients))
            for client in clients:
                client.drop()

    def _worker(self):
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                item = heapq.heappop(self.queue)
                self.running[item[1]] = item
                self.queue_updated()
            prompt_id, extra_data = item[1], item[3]
            started = time.monotonic()
            try:
                run, success, result = self.execute(item)
            except Exception:  # noqa: BLE001 - the worker must survive anything
                log.exception("prompt %s: unexpected failure", prompt_id)
                run, success, result = Run(self, prompt_id, extra_data.get("client_id")), False, {}
            log.info("Prompt executed in %.2f seconds", time.monotonic() - started)
            faults = self.faults.snapshot()
            if faults["history_lag"] and random.random() < faults["history_lag_share"]:  # noqa: S311
                # Real ComfyUI writes the history entry after execution_success went out; a client may look
                # before it is there (seen in 2 of 20 runs). Still "running" in /queue meanwhile, as there.
                log.warning("fault history_lag: history of %s in %.2fs", prompt_id, faults["history_lag"])
                time.sleep(faults["history_lag"])
            with self.cond:
                self.running.pop(prompt_id, None)
                entry = {"prompt": list(copy.deepcopy(item[:5])), "outputs": {},
                         "status": {"status_str": "success" if success else "error", "completed": success,
                                    "messages": run.messages}}
                entry.update(result)
                self.history[prompt_id] = entry
                while len(self.history) > MAX_HISTORY:
                    self.history.popitem(last=False)
                self.executed_total += 1
                self.queue_updated()
            if run.client_id is not None:
                run.send("executing", {"node": None, "prompt_id": prompt_id})
            self.last_node_id = None

    def signatures(self, prompt):
        memo = {}

        def sig(node_id, trail=()):
            if node_id in memo:
                return memo[node_id]
            node = prompt[node_id]
            definition = NODES[node["class_type"]]
            changed = definition.is_changed(self.layout, node["inputs"]) if definition.is_changed else None
            parts = [node["class_type"], repr(changed)]
            for key in sorted(node["inputs"]):
                value = node["inputs"][key]
                if is_link(value) and value[0] in prompt and value[0] not in trail:
                    parts.append((key, sig(value[0], trail + (node_id,)), value[1]))
                else:
                    parts.append((key, json.dumps(value, sort_keys=True)))
            memo[node_id] = tuple(parts)
            return memo[node_id]

        return {node_id: sig(node_id) for node_id in prompt}

    def _order(self, prompt, outputs, is_cached):
        """Yield nodes in ComfyUI's order: dependencies first, output-adjacent nodes preferred."""
        pending, blocking, block_count = OrderedDict(), {}, {}

        def add_node(start):
            stack, links = [start], []
            while stack:
                uid = stack.pop()
                if uid in pending:
                    continue
                pending[uid], blocking[uid], block_count[uid] = True, set(), 0
                for value in prompt[uid]["inputs"].values():
                    if is_link(value):
                        if not is_cached(value[0]):
                            stack.append(value[0])
                        links.append((value[0], uid))
            for src, dst in links:
                if not is_cached(src):
                    add_node(src)
                    if dst not in blocking[src]:
                        blocking[src].add(dst)
                        block_count[dst] += 1

        def is_output(uid):
            return NODES[prompt[uid]["class_type"]].output_node

        for out in outputs:
            add_node(out)
        while pending:
            available = [uid for uid in pending if block_count[uid] == 0]
            pick = next((u for u in available if is_output(u)), None)
            pick = pick or next((u for u in available if any(is_output(b) for b in blocking[u])), None)
            pick = pick or next((u for u in available
                                 if any(is_output(c) for b in blocking[u] for c in blocking[b])), None)
            pick = pick or available[0]
            yield pick
            del pending[pick]
            for dst in blocking.pop(pick):
                block_count[dst] -= 1

    def execute(self, item):
        number, prompt_id, prompt, extra_data, outputs = item[:5]
        self.interrupted.clear()
        client_id = extra_data.get("client_id")
        self.client_id = client_id
        run = Run(self, prompt_id, client_id)
        run.add_message("execution_start", {"prompt_id": prompt_id}, False)
        sigs = self.signatures(prompt)
        cache = self.cache if self.use_cache else {}
        cached = [nid for nid in prompt if sigs[nid] in cache]
        run.add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id}, False)
        results, ui_outputs, executed, new_cache = {}, OrderedDict(), [], {}
        for nid in cached:
            results[nid] = cache[sigs[nid]][0]
            new_cache[sigs[nid]] = cache[sigs[nid]]
        success = True
        for nid in self._order(prompt, outputs, lambda n: n in results):
            node = prompt[nid]
            definition = NODES[node["class_type"]]
            if nid in results:  # a cached output node: report its earlier result again
                ui = cache[sigs[nid]][1]
                if ui is not None:
                    ui_outputs[nid] = ui
                    if client_id is not None:
                        run.send("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": prompt_id})
                run.finish(nid)
                continue
            run.start(nid)
            kwargs = {}
            for name, value in node["inputs"].items():
                if is_link(value):
                    kwargs[name] = results[value[0]][value[1]]
                else:
                    kwargs[name] = value
            self.last_node_id = nid
            if client_id is not None:
                run.send("executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id})
            try:
                self._before_node(nid, definition)
                ctx = NodeContext(self, nid, prompt, extra_data, run)
                known = set(definition.inputs.get("required", {})) | set(definition.inputs.get("optional", {}))
                out, ui = definition.run(ctx, **{k: v for k, v in kwargs.items() if k in known})
            except Interrupted:
                success = False
                log.info("Processing interrupted")
                run.add_message("execution_interrupted", {"prompt_id": prompt_id, "node_id": nid,
                                                          "node_type": node["class_type"], "executed": executed},
                                True)
                break
            except Exception as exc:  # noqa: BLE001 - becomes an execution_error like in ComfyUI
                success = False
                log.error("!!! Exception during processing !!! %s", exc)
                run.add_message("execution_error", {
                    "prompt_id": prompt_id, "node_id": nid, "node_type": node["class_type"], "executed": executed,
                    "exception_message": f"{exc}\n",
                    "exception_type": exc.exception_type if isinstance(exc, LoadError) else _type_name(exc),
                    "traceback": traceback.format_tb(exc.__traceback__),
                    "current_inputs": {k: [v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)]
                                       for k, v in kwargs.items()},
                    "current_outputs": list(prompt),
                }, False)
                break
            results[nid] = out
            executed.append(nid)
            new_cache[sigs[nid]] = (out, None)
            if ui:
                ui_outputs[nid] = ui
                new_cache[sigs[nid]] = (out, ui)
                if client_id is not None:
                    run.send("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": prompt_id})
            run.finish(nid)
        else:
            run.add_message("execution_success", {"prompt_id": prompt_id}, False)
        self.cache = new_cache if self.use_cache else {}
        meta = {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                for nid in ui_outputs}
        return run, success, {"outputs": dict(ui_outputs), "meta": meta}

    def _before_node(self, nid, definition):
        self.check_interrupt()
        faults = self.faults.snapshot()
        if Faults.matches(faults["crash"], nid, definition.name):
            log.error("fault crash: exiting in node %s (%s)", nid, definition.name)
            self.hub.flush()
            logging.shutdown()
            os._exit(1)
        if Faults.matches(faults["fail_node"], nid, definition.name):
            raise InjectedFailure(faults.get("fail_message")
                                  or f"stand-in fault: node {nid} ({definition.name}) was told to fail")
        if faults["delay"] and not definition.reports_progress:
            time.sleep(faults["delay"])
