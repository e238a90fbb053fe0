# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one error type of the collection.

Library code raises :class:`GpuWorkerError`. In the Ansible modules, :func:`ansible_common.run_module` (which every
module's ``main`` calls) is the one place where it becomes ``fail_json``: ``msg`` is ``str(err)``, plus ``field``
and the ``details``. Node commands print ``str(err)`` as one line and exit with ``exit_code``.

The exit codes below are the ONE table of every node command (``sync-checkpoints``, ..., ``test-run-workflow``);
roles/minio_helpers/README.md documents it ("Exit codes") and ``exit_codes_text`` is the ``--help`` epilog's copy.
Like rclone's, a failure that retrying can fix (:data:`EXIT_TEMPORARY`) is told apart from one that it cannot
(:data:`EXIT_ACCESS`, :data:`EXIT_CONFIG`, ...).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

EXIT_OK = 0
EXIT_FAILURE = 1  # any failure not listed below (S3 error such as a missing bucket, local I/O, ...)
EXIT_USAGE = 2  # bad command line or option value, unusable input (workflow file)
EXIT_CONFIG = 3  # minio.env / endpoint configuration
EXIT_INTEGRITY = 4  # a downloaded file failed its integrity check
EXIT_TIMEOUT = 5  # the workflow run did not finish in time
EXIT_TEMPORARY = 6  # server unreachable or failing (network, 5xx, throttling) after the retries: run again later
EXIT_ACCESS = 7  # credentials rejected or access denied: retrying will not help
EXIT_VALIDATION = 8  # ComfyUI (or the --check pre-check) rejected the workflow
EXIT_EXECUTION = 9  # the workflow failed while running (a node failed, the run was interrupted)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT

# code -> meaning, in the words of the documentation (README table, --help epilogs)
EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_FAILURE, "failure not listed here (S3 error such as a missing bucket, local I/O)"),
    (EXIT_USAGE, "usage: bad option or option value, unusable workflow file"),
    (EXIT_CONFIG, "configuration (minio.env, endpoint)"),
    (EXIT_INTEGRITY, "integrity check of a download failed"),
    (EXIT_TIMEOUT, "workflow run timed out"),
    (EXIT_TEMPORARY, "server unreachable or failing (network, 5xx, throttling) after the retries: try again later"),
    (EXIT_ACCESS, "credentials rejected or access denied: fix them, retrying will not help"),
    (EXIT_VALIDATION, "workflow rejected by ComfyUI or by the --check pre-check"),
    (EXIT_EXECUTION, "workflow failed while running (or was interrupted on ComfyUI)"),
    (EXIT_INTERRUPTED, "interrupted"),
)


# exit codes whose cause a later run can clear by itself (rclone's "retryable" errors): the server was unreachable or
# failing, a download failed its check (fetched again from scratch), the run was interrupted (the next one resumes).
# Every other failure is fatal: running again changes nothing until someone fixes the cause.
RETRYABLE_EXIT_CODES = (EXIT_TEMPORARY, EXIT_INTEGRITY, EXIT_INTERRUPTED)


def error_class(exit_code):
    """``"retryable"`` or ``"fatal"`` (``None`` for success), the ``error.class`` of the ``--json`` documents."""
    if not exit_code:
        return None
    return "retryable" if exit_code in RETRYABLE_EXIT_CODES else "fatal"


def exit_codes_text():
    """The table as one paragraph, for ``--help`` epilogs."""
    return "exit codes: " + "; ".join("%d %s" % (code, text) for code, text in EXIT_CODES)


class GpuWorkerError(Exception):
    """A failure with a message an operator can act on.

    :param message: what went wrong, one line, never containing a secret.
    :param field: the option/variable/key at fault (``minio.env: MINIO_ENDPOINT``), if any.
    :param hint: how to fix it.
    :param exit_code: exit status for node commands (:data:`EXIT_FAILURE` by default; see :data:`EXIT_CODES`).
    :param details: extra structured data returned by modules (e.g. ``node_errors``).
    """

    def __init__(self, message, field=None, hint=None, exit_code=EXIT_FAILURE, details=None):
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
    """A failure worth retrying (connection reset, 5xx, throttling): exit code :data:`EXIT_TEMPORARY`."""

    def __init__(self, message, field=None, hint=None, exit_code=EXIT_TEMPORARY, details=None):
        super(TransientError, self).__init__(message, field=field, hint=hint, exit_code=exit_code, details=details)
