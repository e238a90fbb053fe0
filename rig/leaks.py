# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The known secret the no-leak tests feed through error paths, and the check that none of it shows.

One definition for the test files that assert "no secret in any message" (library, node commands, agent config,
role preflights): a MinIO-style secret random enough that no 5-character piece occurs in a message by chance, and
``leaked`` which finds any such piece.
"""
from __future__ import annotations

SECRET = "lkDUt0Zq9/sEcR+eTWx7pLmN3vB8kJ2hGqY4uFa1"  # noqa: S105 - the known test secret, never a real one


def leaked(text, secret=SECRET):
    """The first piece (5 characters or more) of ``secret`` found in ``text``, or None."""
    text = str(text)
    return next((secret[i:i + 5] for i in range(len(secret) - 4) if secret[i:i + 5] in text), None)
