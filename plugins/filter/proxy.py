# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters on visionsuit_proxy_env, the proxy and mirror settings of the nodes' downloads (apt, pip, git,
get_url). Documentation: proxy_env.yml and proxy_env_error.yml beside this file. No message shows a value: a proxy
URL may carry a user and password."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.errors import AnsibleFilterError

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.s3.endpoint import parse_endpoint

#: the proxy settings (either case in the inventory; both cases on the node: apt and git read the lower case,
#: pip and curl either, some tools only the upper case)
PROXY_KEYS = ("http_proxy", "https_proxy", "no_proxy")
#: pip's own settings for a PyPI mirror (upper case, as pip reads them)
PIP_KEYS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")
#: never through a proxy: the roles' health checks, the drain and the local services
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_HOST_ENTRY = re.compile(r"^[A-Za-z0-9.*:\[\]/_-]+$")


def _url_ok(text, path_allowed):
    """A proxy URL (``path_allowed`` False) or an index URL: the scheme, host and port follow the one rule of
    module_utils/s3/endpoint.py (http/https, a host, IPv6 in brackets, a valid port); a ``user:password@`` may
    precede the host; an index URL may have a path. No whitespace anywhere."""
    if not text or any(c.isspace() for c in text):
        return False
    scheme, sep, rest = text.partition("://")
    authority, _slash, path = rest.partition("/")
    if not sep or (path and not path_allowed):
        return False
    try:
        parse_endpoint(scheme + "://" + authority.rpartition("@")[2])
    except GpuWorkerError:
        return False
    return True


def _canonical(key):
    text = str(key)
    if text.lower() in PROXY_KEYS:
        return text.lower()
    if text.upper() in PIP_KEYS:
        return text.upper()
    return None


def _no_proxy_entries(value):
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def _check(value, name):
    """(settings by canonical key, '') or (None, the reason naming ``name`` and the key, never the value)."""
    if value is None or value == "":
        return {}, ""
    if not isinstance(value, dict):
        return None, "%s must be a dict such as {http_proxy: 'http://proxy.example:3128', https_proxy: ..., " \
                     "no_proxy: ...} (got a %s)" % (name, type(value).__name__)
    settings = {}
    for key, item in value.items():
        canonical = _canonical(key)
        if canonical is None:
            return None, "%s: unknown key %r; allowed: %s (either case) and %s" % (
                name, str(key)[:40], ", ".join(PROXY_KEYS), ", ".join(PIP_KEYS))
        if canonical in settings:
            return None, "%s: %s is set twice (in upper and lower case); set it once" % (name, canonical)
        if canonical == "no_proxy":
            entries = _no_proxy_entries(item)
            if not all(_HOST_ENTRY.match(entry) for entry in entries):
                return None, "%s: no_proxy must be host names, domains (.example.com) or addresses, comma " \
                             "separated or a list" % name
            settings[canonical] = entries
            continue
        text = "" if item is None else str(item).strip()
        if canonical == "PIP_TRUSTED_HOST":
            if not text or not all(_HOST_ENTRY.match(entry) for entry in text.split()):
                return None, "%s: PIP_TRUSTED_HOST must be host names separated by spaces" % name
        elif canonical.endswith("_proxy"):
            if not _url_ok(text, path_allowed=False):
                return None, "%s: %s must be a URL such as http://proxy.example:3128 (http:// or https://, a " \
                             "host, an optional port and user:password@, no path)" % (name, canonical)
        elif not all(_url_ok(entry, path_allowed=True) for entry in (text.split() or [""])):
            return None, "%s: %s must be a URL such as https://pypi.mirror.example/simple (http:// or https://)" % (
                name, canonical)
        settings[canonical] = text
    return settings, ""


def proxy_env_error(value, name="visionsuit_proxy_env"):
    """'' when ``value`` is a valid visionsuit_proxy_env, else one line naming ``name`` and the key at fault."""
    return _check(value, name)[1]


def proxy_env(value, name="visionsuit_proxy_env", endpoint=""):
    """The environment of the tasks that download: each proxy variable in lower and upper case, no_proxy with the
    loopback names and the MinIO ``endpoint``'s host added to the operator's, pip's settings as given; {} for an
    empty ``value``. Raises an error naming ``name`` (never the value) for an invalid one."""
    settings, error = _check(value, name)
    if error:
        raise AnsibleFilterError(error)
    if not settings:
        return {}
    no_proxy = list(settings.pop("no_proxy", []))
    extra = list(LOOPBACK)
    if endpoint:
        try:
            extra.append(parse_endpoint(endpoint).host)
        except GpuWorkerError:
            pass  # the roles' preflights name a bad endpoint
    for host in extra:
        if host not in no_proxy:
            no_proxy.append(host)
    settings["no_proxy"] = ",".join(no_proxy)
    env = {}
    for key, item in settings.items():
        env[key] = item
        if key in PROXY_KEYS:
            env[key.upper()] = item
    return env


class FilterModule(object):
    def filters(self):
        return {"proxy_env": proxy_env, "proxy_env_error": proxy_env_error}
