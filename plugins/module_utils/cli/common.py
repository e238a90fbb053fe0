# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What every node command shares: the argument parser (one-line usage errors, exit code 2, ``--version``, the
exit code table in ``--help``) and the option value validators (``type=`` of ``add_argument``).

A bad option value (``--workers 0``, ``--part-size 1K``, ``--port http``) is refused while the command line is
parsed, before any file is read or server contacted: ``<command>: error: argument --workers: ...`` on stderr,
one line, exit code :data:`~..errors.EXIT_USAGE`.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import math
import sys

from ..errors import EXIT_USAGE, error_class, exit_codes_text
from ..version import package_version


def json_line(doc):
    """``doc`` as one compact line of JSON (the one document a ``--json`` run prints on stdout)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def json_error(command, message, exit_code, field=None, details=None, doc=None):
    """The ``--json`` document of a failed run: ``doc`` (what the command has to say, if anything) plus ``ok``
    (false), ``command``, ``exit_code``, ``error_class`` (``fatal``/``retryable``, :func:`..errors.error_class`),
    ``message`` (the error line) and, when known, ``field`` and ``details``."""
    out = dict(doc or {})
    out.update(ok=False, command=command, exit_code=exit_code, error_class=error_class(exit_code), message=message)
    if field:
        out["field"] = field
    if details:
        out["details"] = details
    return out


class NodeArgumentParser(argparse.ArgumentParser):
    """``argparse`` with one-line errors (``<prog>: error: <message> (see --help)``), exit code 2, ``--version``
    and the exit code table (plus ``epilog_extra``) as the epilog."""

    def __init__(self, prog, description, epilog_extra=None):
        epilog = exit_codes_text() + (". " + epilog_extra if epilog_extra else "")
        super(NodeArgumentParser, self).__init__(prog=prog, description=description, epilog=epilog)
        self.add_argument("--version", action="version", version="%(prog)s " + package_version(),
                          help="print the version of the installed package and exit")
        self.json_errors = False  # set by the caller when the command line asks for --json

    def error(self, message):
        message = " ".join(str(message).split())
        if self.json_errors:  # --json: the usage error is the run's one JSON document too
            sys.stdout.write(json_line(json_error(self.prog, message, EXIT_USAGE)) + "\n")
            sys.stdout.flush()
        # argparse's own exit (prints to stderr, then exits) keeps sys.exit out of the library
        self.exit(EXIT_USAGE, "%s: error: %s (see --help)\n" % (self.prog, message))


def _number(text, kind):
    try:
        value = int(text, 10) if kind == "int" else float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError("invalid %s value: %r" % (kind, text)) from None
    if kind == "float" and not math.isfinite(value):
        raise argparse.ArgumentTypeError("invalid float value: %r (a finite number)" % text)
    return value


def int_range(low, high=None):
    """``type=`` for an integer from ``low`` to ``high`` (inclusive; no upper bound when None)."""
    def check(text):
        value = _number(text, "int")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError("%s: must be %s, not %d" % (
                text, "from %d to %d" % (low, high) if high is not None else "at least %d" % low, value))
        return value
    check.__name__ = "int"
    return check


def seconds(allow_zero=False):
    """``type=`` for a finite number of seconds, > 0 (or >= 0 with ``allow_zero``)."""
    def check(text):
        value = _number(text, "float")
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError("%r: must be %s seconds" % (
                text, "0 or more" if allow_zero else "more than 0"))
        return value
    check.__name__ = "float"
    return check


def parse_size(text):
    """``1048576``, ``64M``, ``64MiB``, ``1G`` -> bytes (positive)."""
    value = str(text).strip().upper().replace("IB", "").rstrip("B")
    mult = 1
    for suffix, m in (("K", 1024), ("M", 1024 ** 2), ("G", 1024 ** 3), ("T", 1024 ** 4)):
        if value.endswith(suffix):
            value, mult = value[:-1], m
            break
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("not a size: %r (use e.g. 16M)" % text) from None
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError("size must be positive: %r" % text)
    return int(number * mult)


def size_at_least(minimum, shown):
    """``type=`` for a size (:func:`parse_size`) of at least ``minimum`` bytes (``shown``: the same, readable)."""
    def check(text):
        value = parse_size(text)
        if value < minimum:
            raise argparse.ArgumentTypeError("%r: must be at least %s" % (text, shown))
        return value
    check.__name__ = "size"
    return check


def parse_rate(text):
    """``type=`` of ``--bwlimit``: bytes per second, ``10M``, ``512K``, ``1.5G``, ``2097152``, optionally ending in
    ``/s`` or ``B/s`` (K/M/G: 1024-based, as ``--part-size``); ``0`` (or ``off``) means no limit."""
    value = str(text).strip()
    if value.lower() in ("0", "off", "none"):
        return 0
    if value.lower().endswith("/s"):
        value = value[:-2]
    try:
        rate = parse_size(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError("not a rate: %r (bytes per second, e.g. 10M or 512K; 0 = no limit)"
                                         % text) from None
    if rate < 1024:
        raise argparse.ArgumentTypeError("%r: must be at least 1K per second (or 0 for no limit)" % text)
    return rate
