# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stand-in for the get-pip.py bootstrap script that ansible-test downloads from a host these machines
cannot reach. ansible-test runs it as ``get_pip_<version>.py <pip options> pip==X [--no-setuptools]
[--no-wheel]`` inside a fresh venv: bootstrap the pip bundled with this Python (ensurepip), then let that
pip install the requested versions from the package index.
"""
import ensurepip
import os
import subprocess
import sys

env = dict(os.environ)  # ensurepip points PIP_CONFIG_FILE at /dev/null; the real install needs pip's config
ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args, env=env))
