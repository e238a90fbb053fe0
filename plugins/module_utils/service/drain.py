# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Drain the GPU agent before ComfyUI or the agent restarts, and resume it after: restarts that kill no job.

The agent's API (agent/README.md, "Draining"): ``POST /drain {"timeout": s, "slot": i}`` stops new jobs on the
agent (or on one render slot) and answers once the running job(s) there ended or the timeout passed;
``POST /resume {"slot": i}`` ends it; ``GET /healthz`` (no token) says what is drained and what runs.

:func:`drain` and :func:`resume` hold the logic and take the HTTP call as a parameter (``call(method, path, body,
timeout) -> (status, document)``, raising :class:`AgentAbsent` when nothing listens), so tests need no sockets;
:class:`AgentClient` is that call over ``http.client``. The restart handlers of the comfyui and gpu_agent roles
use it through the module ``agent_drain``:

* nothing listens (connection refused: the first provision, a host without an agent): ``agent: absent``, nothing
  to drain, no change;
* an agent older than the drain API (``POST /drain`` is a 404): ``agent: unsupported``, a warning, no change;
* the drain times out with jobs still running: the drain this call started is undone (the node goes on taking
  jobs) and it fails naming the jobs, their slots and the variables that decide (:data:`TIMEOUT_VAR`,
  :data:`FORCE_VAR`); with ``force`` it warns and leaves the agent drained for the restart;
* the agent cannot be drained (token refused, allow-list, unreachable): an error naming what to fix; with
  ``force`` a warning and ``agent: error``.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import ssl
import time

try:  # Python 3 (every node); the guard keeps ansible-test's compile check for old interpreters quiet
    import http.client as http_client
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover
    http_client = urlsplit = None

from ..errors import GpuWorkerError

#: the agent waits at most this long in one POST /drain (its MAX_DRAIN_TIMEOUT); longer waits send it again
AGENT_MAX_WAIT = 3600
#: seconds the HTTP client waits beyond the drain's own wait (the answer comes when the wait ends)
HTTP_GRACE = 30.0
#: the playbook variables an operator turns (the roles' drain timeout and force default from them)
TIMEOUT_VAR = "visionsuit_drain_timeout"
FORCE_VAR = "visionsuit_force_restart"
#: most job ids named in one message
JOBS_NAMED = 10
#: most bytes of an answer read
MAX_ANSWER = 1048576


class AgentAbsent(Exception):
    """Nothing listens at the agent's address (connection refused)."""


# ------------------------------------------------------------------------------------------------------- HTTP
class AgentClient:
    """``call(method, path, body=None, timeout=30)`` -> ``(status, document)`` against the agent at ``url``.

    Raises :class:`AgentAbsent` on a refused connection and :class:`GpuWorkerError` when the agent cannot be
    reached otherwise (timeout, TLS, name resolution) or answers what is not JSON. The token goes in the
    ``Authorization`` header of the POSTs only (``/healthz`` needs none) and in no message.
    """

    def __init__(self, url, token, validate_certs=True, ca_path=None, connect_timeout=10.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GpuWorkerError("not an http(s) URL such as http://127.0.0.1:8081: %r" % (url,), field="url")
        self.url = "%s://%s" % (parts.scheme, parts.netloc.rpartition("@")[2])
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = parts.path.rstrip("/")
        self.token = token or ""
        self.validate_certs = validate_certs
        self.ca_path = ca_path or None
        self.connect_timeout = connect_timeout

    def _connection(self, timeout):
        if self.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_path)
            if not self.validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            return http_client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)
        return http_client.HTTPConnection(self.host, self.port, timeout=timeout)

    def __call__(self, method, path, body=None, timeout=30.0):
        headers = {"Accept": "application/json", "User-Agent": "visionsuit-agent-drain"}
        data = None
        if method == "POST":
            headers["Authorization"] = "Bearer " + self.token
            data = json.dumps(body or {}).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = self._connection(min(self.connect_timeout, timeout))
        try:
            conn.connect()
            conn.sock.settimeout(timeout)   # the answer of a drain comes when its wait ends
            conn.request(method, self.base + path, body=data, headers=headers)
            response = conn.getresponse()
            status, raw = response.status, response.read(MAX_ANSWER)
        except ConnectionRefusedError:
            raise AgentAbsent("nothing listens at %s (connection refused)" % self.url)
        except http_client.HTTPException as err:
            raise GpuWorkerError("%s %s%s: bad HTTP answer (%s)" % (method, self.url, path, err.__class__.__name__))
        except OSError as err:
            raise GpuWorkerError("cannot reach the agent at %s (%s %s): %s" % (
                self.url, method, path, err.strerror or str(err) or err.__class__.__name__))
        finally:
            conn.close()
        try:
            document = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, ValueError):
            document = None
        if document is None and status < 300:
            raise GpuWorkerError("%s %s%s answered HTTP %s that is not JSON: is this the VisionSuit agent?" % (
                method, self.url, path, status))
        return status, document


# ------------------------------------------------------------------------------------------------------- logic
def _where(slot):
    return "the agent" if slot is None else "slot %d" % slot


def _jobs_text(running):
    """'j1 (slot 0), j2 (slot 1)', at most JOBS_NAMED of them."""
    named = ["%s (slot %s)" % (job.get("job_id"), job.get("slot")) for job in running[:JOBS_NAMED]]
    if len(running) > JOBS_NAMED:
        named.append("and %d more" % (len(running) - JOBS_NAMED))
    return ", ".join(named)


def _error_text(document):
    if isinstance(document, dict) and document.get("error"):
        return str(document["error"])[:300]
    return "no message"


def _check_answer(status, document, what, url):
    """Raise the GpuWorkerError an operator can act on for an answer that is not 200."""
    if status == 200 and isinstance(document, dict):
        return
    text = _error_text(document)
    if status == 401:
        raise GpuWorkerError("the agent at %s refused the token (HTTP 401) on %s: it must be the running agent's "
                             "server.api_token (gpu_agent_api_token; after a change of it, the agent runs with the "
                             "old one until the gpu_agent role restarts it)" % (url, what), field="token")
    if status == 403:
        raise GpuWorkerError("the agent at %s refuses this client (HTTP 403: %s) on %s: its allow-list "
                             "(gpu_agent_allowed_networks) must hold the address this host connects from" % (
                                 url, text, what))
    if status == 500:
        raise GpuWorkerError("the agent at %s could not do %s (HTTP 500: %s)" % (url, what, text))
    raise GpuWorkerError("the agent at %s answered HTTP %s to %s: %s" % (url, status, what, text))


def _health(call, url):
    """GET /healthz -> the document, or None when nothing listens."""
    try:
        status, document = call("GET", "/healthz", None, 30.0)
    except AgentAbsent:
        return None
    _check_answer(status, document, "GET /healthz", url)
    return document


def _slots_of(health):
    """The agent's slot indexes, or None when /healthz does not list them (an older agent)."""
    slots = health.get("slots")
    if not isinstance(slots, list):
        return None
    return [s.get("slot") for s in slots if isinstance(s, dict)]


def _was_draining(health, slot):
    if slot is None:
        return bool(health.get("draining"))
    return slot in (health.get("drained_slots") or [])


def _running(health, slot):
    running = [job for job in health.get("running") or [] if isinstance(job, dict)]
    return [job for job in running if slot is None or job.get("slot") == slot]


def _base(agent, slot, changed=False, **extra):
    out = {"changed": changed, "agent": agent, "slot": slot, "draining": False, "drained_slots": [],
           "accepting_jobs": True, "idle": True, "running": [], "queued": 0, "since": None, "waited": 0.0,
           "forced": False, "undone": False, "warnings": []}
    out.update(extra)
    return out


def _from_document(out, document):
    for key in ("draining", "drained_slots", "accepting_jobs", "idle", "running", "queued", "since"):
        if key in document:
            out[key] = document[key]
    return out


def _from_health(out, health, slot):
    out["draining"] = _was_draining(health, slot)
    out["drained_slots"] = list(health.get("drained_slots") or [])
    out["accepting_jobs"] = not health.get("draining")
    out["running"] = _running(health, slot)
    out["idle"] = not out["running"]
    out["queued"] = health.get("queue_depth", 0)
    out["since"] = health.get("drained_since")
    return out


def _unknown_slot(out, slot, slots):
    out["msg"] = ("the agent has no slot %d (its slots: %s): no job of it runs on that ComfyUI instance, nothing to "
                  "drain or resume" % (slot, ", ".join(str(s) for s in slots) or "none"))
    out["slot_known"] = False
    return out


def drain(call, url, slot=None, timeout=600, force=False, check_mode=False, clock=time.monotonic,
          sleep=time.sleep):
    """Drain the agent (``slot`` None) or one slot and wait up to ``timeout`` s for the running jobs there.

    Returns the module result (``changed`` when the drain was not in force before). Raises GpuWorkerError when
    jobs still run after ``timeout``, after undoing the drain it started, or when the agent cannot be drained
    (token refused, allow-list, unreachable). With ``force`` each of these is a warning instead (``forced``, and
    ``agent: error`` when no drain was made): the restart goes ahead.
    """
    try:
        return _drain(call, url, slot, timeout, force, check_mode, clock, sleep)
    except GpuWorkerError as err:
        if not force:
            raise
        out = _base("error", slot, forced=True, msg="not drained: %s" % err)
        out["warnings"].append("%s could not be drained (%s): restarting anyway (%s), jobs running there are cut "
                               "short" % (_where(slot), err, FORCE_VAR))
        return out


def _drain(call, url, slot, timeout, force, check_mode, clock, sleep):
    health = _health(call, url)
    if health is None:
        return _base("absent", slot, msg="no agent answers at %s (connection refused): nothing to drain" % url)
    slots = _slots_of(health)
    if slot is not None and slots is not None and slot not in slots:
        return _unknown_slot(_base("present", slot), slot, slots)
    if "drained_slots" not in health:
        out = _base("unsupported", slot)
        out["warnings"].append("the agent at %s has no drain API (an older version): %s restarts without a drain; "
                               "jobs running there now are cut short (the agent runs them again)" % (url, _where(slot)))
        return out
    was_draining = _was_draining(health, slot)
    if check_mode:
        out = _from_health(_base("present", slot, changed=not was_draining), health, slot)
        out["draining"] = True
        out["msg"] = "check mode: would drain %s%s; %s" % (
            _where(slot), "" if not was_draining else " (drained already)",
            "no job runs there now" if not out["running"] else
            "%d job(s) run there now (%s): a real run waits up to %s s for them" % (
                len(out["running"]), _jobs_text(out["running"]), timeout))
        return out

    start = clock()
    deadline = start + max(0.0, float(timeout))
    body = {} if slot is None else {"slot": slot}
    while True:
        asked = clock()
        wait = round(min(max(0.0, deadline - asked), AGENT_MAX_WAIT), 1)
        wait = int(wait) if wait == int(wait) else wait
        request = dict(body, timeout=wait) if wait else body
        try:
            status, document = call("POST", "/drain", request, wait + HTTP_GRACE)
        except AgentAbsent:
            raise GpuWorkerError("the agent at %s stopped answering while %s was drained (connection refused): "
                                 "restart nothing before it is back" % (url, _where(slot)))
        if status == 404 and not was_draining:
            out = _base("unsupported", slot)
            out["warnings"].append("the agent at %s has no drain API (POST /drain is a 404: an older version): %s "
                                   "restarts without a drain; jobs running there now are cut short (the agent runs "
                                   "them again)" % (url, _where(slot)))
            return out
        _check_answer(status, document, "POST /drain", url)
        if document.get("idle") or clock() >= deadline:
            break
        if clock() - asked < wait - 1:   # answered before its wait was over (the agent stopping): not in a spin
            sleep(min(1.0, max(0.0, deadline - clock())))
    out = _from_document(_base("present", slot, changed=not was_draining), document)
    out["waited"] = round(clock() - start, 2)
    if out["idle"]:
        out["msg"] = "%s is drained and idle%s" % (_where(slot), " (drained already)" if was_draining else "")
        return out
    running = [job for job in out["running"] if isinstance(job, dict)]
    if force:
        out["forced"] = True
        out["warnings"].append("%s still runs job(s) %s after %s s: restarting anyway (%s), the job(s) are cut "
                               "short" % (_where(slot), _jobs_text(running), timeout, FORCE_VAR))
        out["msg"] = "%s is drained, not idle (forced)" % _where(slot)
        return out
    undone = _undo(call, url, slot, health) if not was_draining else False
    raise GpuWorkerError(
        "%s still runs %d job(s) after %s s of waiting: %s. Not restarting, so that no job is cut short; %s. "
        "Raise %s (now %s s) to wait longer, or restart anyway with -e %s=true (the job(s) are cut short)." % (
            "the agent at %s" % url if slot is None else "slot %d of the agent at %s" % (slot, url),
            len(running), timeout, _jobs_text(running),
            "the drain was undone (%s takes jobs again)" % _where(slot) if undone
            else "%s stays drained, as it was before" % _where(slot),
            TIMEOUT_VAR, timeout, FORCE_VAR),
        details=dict(agent="present", slot=slot, idle=False, running=running, undone=undone,
                     waited=round(clock() - start, 2)))


def _undo(call, url, slot, health):
    """End the drain this run started (the restart is not made); slots drained one by one before stay drained."""
    status, document = call("POST", "/resume", {} if slot is None else {"slot": slot}, 30.0)
    _check_answer(status, document, "POST /resume", url)
    if slot is None:
        for index in health.get("drained_slots") or []:
            status, document = call("POST", "/drain", {"slot": index}, 30.0)
            _check_answer(status, document, "POST /drain", url)
    return True


def resume(call, url, slot=None, check_mode=False):
    """End the drain of the agent (``slot`` None: every slot) or of one slot. ``changed`` when it was drained."""
    health = _health(call, url)
    if health is None:
        return _base("absent", slot, msg="no agent answers at %s (connection refused): nothing to resume" % url)
    slots = _slots_of(health)
    if slot is not None and slots is not None and slot not in slots:
        return _unknown_slot(_base("present", slot), slot, slots)
    if "drained_slots" not in health:
        return _base("unsupported", slot, msg="the agent at %s has no drain API (an older version): nothing to "
                                              "resume" % url)
    if slot is None:
        was_draining = bool(health.get("drained_slots")) or bool(health.get("draining"))
    else:
        was_draining = _was_draining(health, slot)
    if check_mode:
        out = _from_health(_base("present", slot, changed=was_draining), health, slot)
        out["msg"] = "check mode: would resume %s%s" % (_where(slot), "" if was_draining else " (not drained)")
        return out
    status, document = call("POST", "/resume", {} if slot is None else {"slot": slot}, 30.0)
    _check_answer(status, document, "POST /resume", url)
    out = _from_document(_base("present", slot, changed=was_draining), document)
    out["msg"] = "%s takes jobs again" % _where(slot) if was_draining else "%s was not drained" % _where(slot)
    return out
