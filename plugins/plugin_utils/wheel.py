# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build a pure-Python wheel from a ``pyproject.toml``, on the controller, with the standard library only.

The collection ships its node-side Python as two projects: the library ``visionsuit-gpuworker`` (the
collection root's ``pyproject.toml``, source ``plugins/module_utils``) and the agent ``visionsuit-gpu-agent``
(``agent/pyproject.toml``). The nodes get them as wheels installed with ``pip install --no-index`` into a venv,
so an upgrade replaces a package whole (pip removes the files the old version's RECORD lists) and
``pip show`` names the version. Building needs no network, no setuptools and no ``build`` on the controller.

Only the part of the setuptools configuration these projects use is read, and anything else in
``[tool.setuptools]`` is refused, so this builder and setuptools (used for editable installs in development)
cannot silently disagree:

- ``[project]``: ``name``, ``version``, ``description``, ``requires-python``, ``license`` (SPDX string),
  ``dependencies``, ``scripts``;
- ``[tool.setuptools]``: ``packages`` (an explicit list), ``package-dir`` (package -> folder),
  ``package-data`` (package -> glob patterns).

The wheel is reproducible: entries are sorted and carry a fixed timestamp and mode, so the same source gives
the same bytes (the role's copy is then unchanged on a re-run, and nothing is reinstalled).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import glob
import hashlib
import io
import os
import re
import zipfile

try:
    import tomllib
except ImportError:  # Python < 3.11 on the controller
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

WHEEL_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
_KNOWN_SETUPTOOLS_KEYS = frozenset(["packages", "package-dir", "package-data"])
_KNOWN_PROJECT_KEYS = frozenset(["name", "version", "description", "requires-python", "license",
                                 "dependencies", "scripts"])


class WheelError(Exception):
    """A project that cannot be built; the message names the file and the field."""


def _normalize(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def load_project(project_dir):
    """Read and check ``project_dir/pyproject.toml``; returns the parts the builder uses."""
    path = os.path.join(project_dir, "pyproject.toml")
    if tomllib is None:
        raise WheelError("building %s needs Python 3.11+ on the controller (tomllib) or the tomli package" % path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, ValueError) as err:
        raise WheelError("cannot read %s: %s" % (path, err))
    project = doc.get("project") or {}
    tool = (doc.get("tool") or {}).get("setuptools") or {}
    for key in ("name", "version"):
        if not isinstance(project.get(key), str) or not project[key]:
            raise WheelError("%s: [project] %s must be a non-empty string" % (path, key))
    unknown = sorted(set(project) - _KNOWN_PROJECT_KEYS)
    if unknown:
        raise WheelError("%s: [project] %s not supported by the node wheel builder" % (path, ", ".join(unknown)))
    unknown = sorted(set(tool) - _KNOWN_SETUPTOOLS_KEYS)
    if unknown:
        raise WheelError("%s: [tool.setuptools] %s not supported by the node wheel builder"
                         % (path, ", ".join(unknown)))
    packages = tool.get("packages")
    if not isinstance(packages, list) or not packages:
        raise WheelError("%s: [tool.setuptools] packages must list every package explicitly" % path)
    return {
        "dir": os.path.abspath(project_dir),
        "name": project["name"],
        "version": project["version"],
        "description": project.get("description", ""),
        "requires_python": project.get("requires-python"),
        "license": project.get("license") if isinstance(project.get("license"), str) else None,
        "dependencies": list(project.get("dependencies") or []),
        "scripts": dict(project.get("scripts") or {}),
        "packages": list(packages),
        "package_dir": dict(tool.get("package-dir") or {}),
        "package_data": dict(tool.get("package-data") or {}),
    }


def _package_folder(project, package):
    """The source folder of ``package`` under setuptools' package-dir rules."""
    mapping = project["package_dir"]
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in mapping:
            return os.path.join(project["dir"], mapping[head], *parts[i:])
    return os.path.join(project["dir"], mapping.get("", ""), *parts)


def package_files(project):
    """``[(archive name, source path)]`` of every file the wheel holds besides its metadata, sorted."""
    files = {}
    listed = set(project["packages"])
    for package in project["packages"]:
        folder = _package_folder(project, package)
        if not os.path.isfile(os.path.join(folder, "__init__.py")):
            raise WheelError("package %s: %s has no __init__.py" % (package, folder))
        prefix = package.replace(".", "/")
        for entry in sorted(os.listdir(folder)):
            src = os.path.join(folder, entry)
            if entry.endswith(".py") and os.path.isfile(src):
                files[prefix + "/" + entry] = src
            elif os.path.isdir(src) and os.path.isfile(os.path.join(src, "__init__.py")) \
                    and package + "." + entry not in listed:
                raise WheelError("package %s.%s (%s) is not listed in [tool.setuptools] packages of %s"
                                 % (package, entry, src, os.path.join(project["dir"], "pyproject.toml")))
        for pattern in project["package_data"].get(package, []):
            matches = sorted(glob.glob(os.path.join(folder, pattern)))
            if not matches:
                raise WheelError("package-data %s: %r matches no file in %s" % (package, pattern, folder))
            for src in matches:
                if os.path.isfile(src):
                    files[prefix + "/" + os.path.relpath(src, folder).replace(os.sep, "/")] = src
    return sorted(files.items())


def metadata_text(project):
    lines = ["Metadata-Version: 2.1", "Name: " + project["name"], "Version: " + project["version"]]
    if project["description"]:
        lines.append("Summary: " + project["description"])
    if project["license"]:
        lines.append("License: " + project["license"])
    if project["requires_python"]:
        lines.append("Requires-Python: " + project["requires_python"])
    lines.extend("Requires-Dist: " + dep for dep in project["dependencies"])
    return "\n".join(lines) + "\n"


def wheel_filename(project):
    return "%s-%s-py3-none-any.whl" % (_normalize(project["name"]), project["version"].replace("-", "_"))


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return "%s,sha256=%s,%d" % (name, digest, len(data))


def wheel_bytes(project):
    """The wheel of ``project`` (from :func:`load_project`) as bytes; the same source gives the same bytes."""
    dist_info = "%s-%s.dist-info" % (_normalize(project["name"]), project["version"].replace("-", "_"))
    entries = []
    for name, src in package_files(project):
        with open(src, "rb") as f:
            entries.append((name, f.read()))
    meta = [
        (dist_info + "/METADATA", metadata_text(project).encode("utf-8")),
        (dist_info + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: visionsuit.gpuworker node_wheel\n"
                               b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
        (dist_info + "/top_level.txt",
         ("\n".join(sorted({p.split(".")[0] for p in project["packages"]})) + "\n").encode("utf-8")),
    ]
    if project["scripts"]:
        text = "[console_scripts]\n" + "".join("%s = %s\n" % kv for kv in sorted(project["scripts"].items()))
        meta.append((dist_info + "/entry_points.txt", text.encode("utf-8")))
    entries.extend(meta)
    record = "".join(_record_line(n, d) + "\n" for n, d in entries) + dist_info + "/RECORD,,\n"
    entries.append((dist_info + "/RECORD", record.encode("utf-8")))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=WHEEL_TIMESTAMP)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def build_wheel(project_dir, out_dir):
    """Write the wheel of ``project_dir`` into ``out_dir`` (atomically) and return its path."""
    project = load_project(project_dir)
    data = wheel_bytes(project)
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    path = os.path.join(out_dir, wheel_filename(project))
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return path
    except OSError:
        pass
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path
