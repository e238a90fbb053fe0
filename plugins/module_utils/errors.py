# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error type of the collection.

Library code raises :class:`GpuWorkerError`. In the Ansible modules, :func:`ansible_common.run_module` (which every
module's ``main`` calls) is the one place where it becomes ``fail_json``: ``msg`` is ``str(err)``, plus ``field``
and the ``details``. Node commands print ``str(err)`` as one line and exit with ``exit_code``.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class GpuWorkerError(Exception):
    """A failure with a message an operator can act on.

    :param message: what went wrong, one line, never containing a secret.
    :param field: the option/variable/key at fault (``minio.env: MINIO_ENDPOINT``), if any.
    :param hint: how to fix it.
    :param exit_code: exit status for node commands (1 by default).
    :param details: extra structured data returned by modules (e.g. ``node_errors``).
    """

    def __init__(self, message, field=None, hint=None, exit_code=1, details=None):
        super(GpuWorkerError, self).__init__(message)
        self.message = message
        self.field = field
        self.hint = hint
        self.exit_code = exit_code
        self.details = details or {}

    def __str__(self):
        text = self.message
        if self.field and self.field not in text:
            text = "%s: %s" % (self.field, text)
        if self.hint:
            text = "%s (%s)" % (text, self.hint)
        return text


class TransientError(GpuWorkerError):
    """A failure worth retrying (connection reset, 5xx, throttling)."""
