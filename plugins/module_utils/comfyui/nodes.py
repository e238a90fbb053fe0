# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How ComfyUI's API format spells things: node ids, links, drop-down (COMBO) input specs.

Pure helpers shared by the workflow checks (:mod:`.workflow`) and the error messages (:mod:`.errors`);
this module imports nothing, so both can use it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type


def node_sort_key(node_id):
    text = str(node_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def is_link(value):
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def combo_options(spec):
    """The allowed values of a drop-down input spec, or None when the input is not a drop-down."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return options if isinstance(options, list) else None
    return None
