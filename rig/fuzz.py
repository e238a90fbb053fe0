# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Hypothesis settings of the project's property-based tests, in one place.

Bounded (``max_examples``), no deadline (a loaded 2-core machine must not flake), derandomized (CI sees the same
examples every run), no example database, and Hypothesis' own cache folder in a temp dir instead of the checkout.
Import it after ``pytest.importorskip("hypothesis")``.
"""
from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

_HOME = tempfile.TemporaryDirectory(prefix="hypothesis-")
set_hypothesis_home_dir(_HOME.name)

SETTINGS = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])
