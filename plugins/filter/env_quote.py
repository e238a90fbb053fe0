# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filter quoting a value for a KEY=VALUE environment file (minio.env): the library's one quoting rule
(quote_env_value in plugins/module_utils/s3/env.py, which the file's parser reads back). Documentation:
env_quote.yml beside this file."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.visionsuit.gpuworker.plugins.module_utils.errors import GpuWorkerError
from ansible_collections.visionsuit.gpuworker.plugins.module_utils.s3.env import quote_env_value


def env_quote(value, name="value"):
    """``value`` in double quotes with ``\\``, ``"``, ``$`` and backtick escaped (read back exactly by minio.env's
    parser, systemd's EnvironmentFile= and a POSIX shell); the error names ``name``, never the value."""
    try:
        return quote_env_value(value, name)
    except GpuWorkerError as err:
        raise AnsibleFilterError(str(err)) from None


class FilterModule(object):
    def filters(self):
        return {"env_quote": env_quote}
