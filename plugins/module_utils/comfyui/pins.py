# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pinned installs of ComfyUI: pip constraint lines, merged and applied.

The comfyui role ships, per supported ComfyUI version, the package versions that version was released with
(``roles/comfyui/vars/releases/<version>.yml``: the common pins and the torch pins per wheel index). The
operator may replace that set with a file of their own and extend or override single pins. An override
replaces every shipped line of the same package (PEP 503 names: ``Pillow`` == ``pillow``), markers included,
because pip refuses two constraints it cannot satisfy at once.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ..errors import GpuWorkerError

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(.*)$")
_CANONICAL_RE = re.compile(r"[-_.]+")
_SPEC_RE = re.compile(r"^(===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9*+!._-]+$")


def canonical_name(name):
    """PEP 503 normalised project name."""
    return _CANONICAL_RE.sub("-", name).lower()


def parse_line(line, field="constraint"):
    """``'numpy==2.2.6 ; python_version < "3.11"'`` -> ``('numpy', '==2.2.6', 'python_version < "3.11"')``.

    Blank lines and comments give None. Anything else that is not ``name[extras] specifiers [; marker]``
    (pip options, URLs, paths) raises GpuWorkerError naming ``field``; the line itself is shown (a constraint
    holds no secret), cut to 80 characters.
    """
    text = str(line).split(" #", 1)[0].strip() if not str(line).lstrip().startswith("#") else ""
    if not text:
        return None
    requirement, _sep, marker = text.partition(";")
    match = _NAME_RE.match(requirement)
    specs = match.group(3).strip() if match else ""
    if not match or any(not _SPEC_RE.match(part.strip()) for part in specs.split(",") if specs):
        raise GpuWorkerError("not a requirement line (name, optional version specifiers, optional '; marker'): "
                             "%r" % (text[:80],), field=field, hint="e.g. requests==2.32.5")
    return match.group(1), specs.replace(" ", ""), marker.strip()


def merge(base, overrides, field="constraints"):
    """``base`` lines with every package named in ``overrides`` replaced by the override lines.

    Overrides must pin a version (a bare name constrains nothing); the result keeps ``base``'s order, the
    overrides last, comments and blank lines dropped, one normalised line per entry.
    """
    parsed_overrides = []
    for index, line in enumerate(overrides or []):
        item_field = "%s[%d]" % (field, index)
        parsed = parse_line(line, item_field)
        if parsed is None:
            continue
        if not parsed[1]:
            raise GpuWorkerError("%r pins no version" % (parsed[0],), field=item_field,
                                 hint="write it as %s==<version>" % parsed[0])
        parsed_overrides.append(parsed)
    replaced = set(canonical_name(p[0]) for p in parsed_overrides)
    out = []
    for index, line in enumerate(base or []):
        parsed = parse_line(line, "%s (shipped or file line %d)" % (field, index + 1))
        if parsed is not None and canonical_name(parsed[0]) not in replaced:
            out.append(format_line(*parsed))
    out.extend(format_line(*p) for p in parsed_overrides)
    return out


def format_line(name, specs, marker):
    return name + specs + ((" ; " + marker) if marker else "")


def pin(names, constraints):
    """Requirement specs for ``names`` (e.g. ``torch``) with the version the ``constraints`` pin with ``==``.

    A name that already carries a specifier, or that no marker-free ``==`` line pins, is returned unchanged.
    """
    pins = {}
    for line in constraints or []:
        parsed = parse_line(line)
        if parsed and not parsed[2] and parsed[1].startswith("==") and "," not in parsed[1]:
            pins[canonical_name(parsed[0])] = parsed[1]
    out = []
    for name in names or []:
        parsed = parse_line(name, "torch packages")
        if parsed is None:
            continue
        if parsed[1] or canonical_name(parsed[0]) not in pins:
            out.append(str(name).strip())
        else:
            out.append(parsed[0] + pins[canonical_name(parsed[0])])
    return out
