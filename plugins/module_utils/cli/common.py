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
import math

from ..errors import EXIT_USAGE, exit_codes_text
from ..version import package_version


class NodeArgumentParser(argparse.ArgumentParser):
    """``argparse`` with one-line errors (``<prog>: error: <message> (see --help)``), exit code 2, ``--version``
    and the exit code table (plus ``epilog_extra``) as the epilog."""

    def __init__(self, prog, description, epilog_extra=None):
        epilog = exit_codes_text() + (". " + epilog_extra if epilog_extra else "")
        super(NodeArgumentParser, self).__init__(prog=prog, description=description, epilog=epilog)
        self.add_argument("--version", action="version", version="%(prog)s " + package_version(),
                          help="print the version of the installed package and exit")

    def error(self, message):
        # argparse's own exit (prints to stderr, then exits) keeps sys.exit out of the library
        self.exit(EXIT_USAGE, "%s: error: %s (see --help)\n" % (self.prog, " ".join(str(message).split())))


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
