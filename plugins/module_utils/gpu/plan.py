# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The install plan for a detected accelerator: apt packages and repositories, the PyTorch wheel index, warnings.

Pure: :func:`plan` takes the detection dict of :mod:`.detect` (``ansible_facts.gpu_worker``), the distribution and
the overrides, and returns plain dicts; it serves the ``gpu_plan`` module and the unit tests. The supported
distributions are :mod:`.distros`.

Overrides are named by their keys (:data:`OVERRIDE_KEYS`): ``vendor``, ``torch_index_url``... Errors
(``GpuWorkerError.field``) and warnings name an override by what the caller calls it: ``names`` maps a key to
that name (the ``gpu_driver`` role passes the names of its variables through the ``gpu_plan`` module), and
without it they name the key. The library knows no role variable.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ..errors import GpuWorkerError
from .detect import parse_version
from .distros import resolve_distro

#: PyTorch's published CUDA wheel indexes, oldest first: (variant, CUDA version, minimum Linux driver,
#: minimum compute capability of the GPUs the wheels still ship kernels for). Minimum drivers are NVIDIA's
#: "CUDA toolkit and corresponding driver versions" table; cu118/cu121 use the minor-version-compatibility
#: minimum of their CUDA major (11.x: 450.80.02, 12.x: 525.60.13), the later ones the GA toolkit driver.
CUDA_WHEELS = (
    ("cu118", "11.8", "450.80.02", (3, 7)),
    ("cu121", "12.1", "525.60.13", (5, 0)),
    ("cu124", "12.4", "550.54.14", (5, 0)),
    ("cu126", "12.6", "560.28.03", (5, 0)),
    ("cu128", "12.8", "570.26", (7, 0)),
    ("cu129", "12.9", "575.51.03", (7, 0)),
    ("cu130", "13.0", "580.65.06", (7, 5)),
)
CUDA_VARIANTS = tuple(w[0] for w in CUDA_WHEELS)
DEFAULT_CUDA_FLOOR = "cu121"

TORCH_INDEX_BASE = "https://download.pytorch.org/whl/"
TORCH_CPU_INDEX = TORCH_INDEX_BASE + "cpu"
DEFAULT_TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")

#: ROCm releases this collection can install: the repo.radeon.com paths, the amdgpu-install package,
#: the matching PyTorch wheel index, and the Ubuntu suites AMD publishes packages for.
ROCM_RELEASES = {
    "5.6": {"build": "50600", "torch": "rocm5.6", "suites": ("jammy",)},
    "5.7": {"build": "50700", "torch": "rocm5.7", "suites": ("jammy",)},
    "6.0": {"build": "60000", "torch": "rocm6.0", "suites": ("jammy",)},
    "6.1": {"build": "60100", "torch": "rocm6.1", "suites": ("jammy",)},
    "6.2": {"build": "60200", "torch": "rocm6.2", "suites": ("jammy", "noble")},
    "6.3": {"build": "60300", "torch": "rocm6.3", "suites": ("jammy", "noble")},
    "6.4": {"build": "60400", "torch": "rocm6.4", "suites": ("jammy", "noble")},
}
DEFAULT_ROCM_VERSION = "6.2"
ROCM_TORCH_FLOOR = "rocm5.6"
ROCM_KEY_URL = "https://repo.radeon.com/rocm/rocm.gpg.key"
AMD_PACKAGES = ("hip-runtime-amd", "rocm-hip-runtime", "rocminfo")
AMD_GROUPS = ("render", "video")

VENDOR_CHOICES = ("auto", "nvidia", "amd", "cpu")

#: the overrides :func:`plan` accepts (what a caller may change); see :func:`normalize_overrides` for the defaults
OVERRIDE_KEYS = ("vendor", "nvidia_branch", "rocm_version", "amd_dkms", "torch_index_url", "torch_floor_cuda",
                 "torch_packages", "blacklist_nouveau", "keyring_dir", "kernel", "architecture")

SOURCES_DIR = "/etc/apt/sources.list.d"
#: Debian components the non-free NVIDIA driver needs (nvidia-driver, firmware-misc-nonfree)
DEBIAN_COMPONENTS = ("main", "contrib", "non-free", "non-free-firmware")
PREFERENCES_DIR = "/etc/apt/preferences.d"


def _label(names, key):
    """What the caller calls override ``key`` in its messages (``names[key]``), else the key itself."""
    return (names or {}).get(key) or key


def driver_branch(package_or_branch):
    """``'nvidia-driver-570-server'`` / ``'570-open'`` / ``'570'`` -> ``'570'``; None if there is none."""
    match = re.search(r"(\d{3})", str(package_or_branch or ""))
    return match.group(1) if match else None

# ------------------------------------------------------------------------------------- CUDA wheel choice


def _branch_version(branch):
    """A bare branch (``'570'``) stands for its newest release."""
    return (int(branch), 999, 999)


def choose_cuda_variant(driver_version, floor=DEFAULT_CUDA_FLOOR, compute_caps=None):
    """Newest PyTorch CUDA wheel index the driver (and the GPUs) support. Returns ``(variant, warnings)``.

    ``driver_version`` is a full version (``'550.54.15'``), a branch (``'570'``) or None (unknown: floor).
    Never below ``floor`` unless the driver is too old for it, which is warned about.
    """
    if floor not in CUDA_VARIANTS:
        raise GpuWorkerError("unknown CUDA wheel floor %r" % (floor,), field="torch_floor_cuda",
                             hint="allowed values: %s" % ", ".join(CUDA_VARIANTS))
    floor_idx = CUDA_VARIANTS.index(floor)
    if driver_version in (None, ""):
        return floor, ["NVIDIA driver version unknown: using the %s floor wheels" % floor]
    text = str(driver_version).strip()
    version = _branch_version(text) if re.match(r"^\d+$", text) else parse_version(text)
    if version is None:
        raise GpuWorkerError("cannot read NVIDIA driver version %r" % (driver_version,),
                             field="nvidia_driver_version", hint="expected e.g. 550.54.15 or a branch like 550")
    caps = [parse_version(c) for c in (compute_caps or []) if parse_version(c)]
    min_cap = min(caps) if caps else None
    warnings = []
    by_driver = [w for w in CUDA_WHEELS if version >= parse_version(w[2])]
    if not by_driver:
        warnings.append("NVIDIA driver %s is older than %s, the minimum for any PyTorch CUDA wheel; using %s "
                        "anyway: upgrade the driver" % (text, CUDA_WHEELS[0][2], floor))
        return floor, warnings
    usable = [w for w in by_driver if min_cap is None or min_cap >= w[3]]
    if not usable:
        usable = by_driver[:1]
    if len(usable) < len(by_driver):
        warnings.append("GPU compute capability %s is too old for the %s wheels: using %s" % (
            ".".join(str(p) for p in min_cap), by_driver[-1][0], usable[-1][0]))
    best = usable[-1]
    if CUDA_VARIANTS.index(best[0]) < floor_idx:
        need = CUDA_WHEELS[floor_idx][2]
        if by_driver[-1][0] == best[0]:
            warnings.append("NVIDIA driver %s supports at most CUDA %s: using %s, below the %s floor "
                            "(upgrade the driver to >= %s)" % (text, best[1], best[0], floor, need))
    return best[0], warnings


def cuda_table():
    """The wheel table as dicts (for documentation and the module's return)."""
    return [{"variant": w[0], "cuda": w[1], "min_driver": w[2],
             "min_compute_capability": "%d.%d" % w[3], "index_url": TORCH_INDEX_BASE + w[0]} for w in CUDA_WHEELS]

# ---------------------------------------------------------------------------------------------- validation


def _choice(value, choices, field):
    if value not in choices:
        raise GpuWorkerError("unknown value %r" % (value,), field=field,
                             hint="allowed values: %s" % ", ".join(choices))
    return value


def normalize_overrides(overrides, distro, names=None):
    """Check the overrides (:data:`OVERRIDE_KEYS`); returns a dict with every key filled in.

    Errors name the override as ``names`` calls it (see :func:`plan`).
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise GpuWorkerError("unknown override(s): %s" % ", ".join(unknown), field="overrides",
                             hint="allowed keys: %s" % ", ".join(sorted(OVERRIDE_KEYS)))
    out = {
        "vendor": overrides.get("vendor") or "auto",
        "nvidia_branch": str(overrides.get("nvidia_branch") or "").strip(),
        "rocm_version": str(overrides.get("rocm_version") or DEFAULT_ROCM_VERSION).strip(),
        "amd_dkms": bool(overrides.get("amd_dkms", True)),
        "torch_index_url": str(overrides.get("torch_index_url") or "").strip(),
        "torch_floor_cuda": overrides.get("torch_floor_cuda") or DEFAULT_CUDA_FLOOR,
        "torch_packages": list(DEFAULT_TORCH_PACKAGES if overrides.get("torch_packages") is None
                               else overrides["torch_packages"]),
        "blacklist_nouveau": bool(overrides.get("blacklist_nouveau", True)),
        "keyring_dir": (overrides.get("keyring_dir") or "/etc/apt/keyrings").rstrip("/"),
        "kernel": overrides.get("kernel") or "",
        "architecture": overrides.get("architecture") or "x86_64",
    }
    _choice(out["vendor"], VENDOR_CHOICES, _label(names, "vendor"))
    _choice(out["torch_floor_cuda"], CUDA_VARIANTS, _label(names, "torch_floor_cuda"))
    _choice(out["rocm_version"], sorted(ROCM_RELEASES, key=parse_version), _label(names, "rocm_version"))
    if out["nvidia_branch"] and not re.match(r"^\d{3}(-(server|open|server-open))?$", out["nvidia_branch"]):
        raise GpuWorkerError("invalid NVIDIA driver branch %r" % (out["nvidia_branch"],),
                             field=_label(names, "nvidia_branch"),
                             hint="use a branch number such as 570, optionally with -server/-open/-server-open, "
                                  "or leave it empty for the recommended driver")
    url = out["torch_index_url"]
    if url and not re.match(r"^https?://\S+$", url):
        raise GpuWorkerError("not an http(s) URL: %r" % (url,), field=_label(names, "torch_index_url"),
                             hint="e.g. https://download.pytorch.org/whl/cu124, or empty for automatic")
    if not out["torch_packages"] or not all(isinstance(p, str) and p.strip() for p in out["torch_packages"]):
        raise GpuWorkerError("must be a non-empty list of package names", field=_label(names, "torch_packages"))
    return out


def validate(distro_id, distro_version, overrides=None, names=None):
    """Preflight: the distribution and overrides are usable (the checks ``plan`` also does)."""
    distro = resolve_distro(distro_id, distro_version)
    opts = normalize_overrides(overrides, distro, names)
    if opts["vendor"] == "amd":
        _check_rocm(opts, distro, names)
    return distro, opts


def _check_rocm(opts, distro, names=None):
    release = ROCM_RELEASES[opts["rocm_version"]]
    ok = [v for v in sorted(ROCM_RELEASES, key=parse_version)
          if parse_version(v) >= parse_version(distro["min_rocm"]) and distro["rocm_suite"] in
          ROCM_RELEASES[v]["suites"]]
    if opts["rocm_version"] not in ok or distro["rocm_suite"] not in release["suites"]:
        raise GpuWorkerError("ROCm %s has no packages for %s" % (opts["rocm_version"], distro["name"]),
                             field=_label(names, "rocm_version"),
                             hint="allowed values on %s: %s" % (distro["name"], ", ".join(ok)))
    if opts["architecture"] not in ("x86_64", "amd64"):
        raise GpuWorkerError("ROCm packages exist for x86_64 only, not %s" % opts["architecture"],
                             field=_label(names, "architecture"))

# ---------------------------------------------------------------------------------------------------- plan


def deb822(types, uris, suites, components, signed_by=None, architectures=None):
    """Render a deb822 ``.sources`` stanza (without the ansible_managed header the template adds)."""
    lines = ["Types: %s" % types, "URIs: %s" % uris, "Suites: %s" % suites]
    if components:
        lines.append("Components: %s" % components)
    if architectures:
        lines.append("Architectures: %s" % architectures)
    if signed_by:
        lines.append("Signed-By: %s" % signed_by)
    return "\n".join(lines) + "\n"


def _repo(name, content, keyring_url=None, keyring_path=None):
    return {"name": name, "path": "%s/visionsuit-%s.sources" % (SOURCES_DIR, name), "content": content,
            "keyring_url": keyring_url, "keyring_path": keyring_path}


def _deb_arch(architecture):
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(architecture, architecture)


def _headers_package(distro, opts):
    if distro["id"] == "debian":
        return "linux-headers-%s" % _deb_arch(opts["architecture"])
    return "linux-headers-%s" % opts["kernel"] if opts["kernel"] else "linux-headers-generic"


def resolve_vendor(detection, opts, warnings, names=None):
    """The accelerator to set up: the override, else what was detected (NVIDIA first when mixed)."""
    detected = detection.get("accelerator") or "cpu"
    vendors = detection.get("vendors") or []
    if opts["vendor"] != "auto":
        if opts["vendor"] != "cpu" and opts["vendor"] not in vendors:
            warnings.append("%s=%s but no %s GPU was detected: installing its stack anyway" % (
                _label(names, "vendor"), opts["vendor"],
                opts["vendor"].upper() if opts["vendor"] == "amd" else "NVIDIA"))
        return opts["vendor"], "override"
    if len([v for v in vendors if v in ("nvidia", "amd")]) > 1:
        warnings.append("mixed GPU vendors (%s): setting up %s only; set %s to choose" % (
            ", ".join(vendors), detected, _label(names, "vendor")))
    return detected, "detected"


def runtime_ok(accelerator, detection):
    """True when the accelerator's runtime already works (nvidia-smi / rocminfo list GPUs)."""
    if accelerator == "nvidia":
        return bool((detection.get("nvidia") or {}).get("smi_ok"))
    if accelerator == "amd":
        return bool((detection.get("amd") or {}).get("rocminfo_ok"))
    return True


def plan(detection, distro_id, distro_version, overrides=None, names=None):
    """What to install for this host: packages, apt repositories, PyTorch wheel index, warnings.

    :param detection: the ``gpu_facts`` dict (``ansible_facts.gpu_worker``), possibly injected.
    :param distro_id: ``ansible_facts.distribution`` (Ubuntu, Debian).
    :param distro_version: ``ansible_facts.distribution_version`` (22.04, 12.5, ...).
    :param overrides: ``{key: value}`` for the keys of :data:`OVERRIDE_KEYS`.
    :param names: ``{key: name}``: what the caller calls an override, for the ``field`` of errors and for
        warnings (the gpu_driver role: the name of its variable); the key where absent.
    """
    detection = detection or {}
    distro, opts = validate(distro_id, distro_version, overrides, names)
    warnings = []
    accelerator, source = resolve_vendor(detection, opts, warnings, names)
    result = {
        "accelerator": accelerator,
        "vendor_source": source,
        "distribution": distro["name"],
        "codename": distro["codename"],
        "packages": [],
        "apt_repositories": [],
        "apt_preferences": [],
        "apt_components": None,
        "blacklist_nouveau": False,
        "service_groups": [],
        "nvidia": None,
        "rocm": None,
        "torch_variant": None,
        "torch_index_url": None,
        "torch_packages": opts["torch_packages"],
        "runtime_check": None,
        "warnings": warnings,
    }
    if accelerator == "nvidia":
        _plan_nvidia(result, detection, distro, opts, names)
    elif accelerator == "amd":
        _plan_amd(result, detection, distro, opts, names)
    else:
        result["torch_variant"] = "cpu"
        result["torch_index_url"] = TORCH_CPU_INDEX
        if source == "detected":
            others = [d for d in detection.get("devices") or [] if not d.get("render_capable")]
            seen = ", ".join("%s (%s)" % (d["name"], d["kind"]) for d in others)
            warnings.append("no NVIDIA or AMD render GPU found%s: installing CPU-only PyTorch" % (
                "; ignored: " + seen if seen else ""))
    if opts["torch_index_url"]:
        result["torch_index_url"] = opts["torch_index_url"]
        result["torch_variant"] = opts["torch_index_url"].rstrip("/").rsplit("/", 1)[-1]
        result["torch_index_source"] = "override"
    else:
        result["torch_index_source"] = "auto"
    result["torch_pip_args"] = ["--index-url", result["torch_index_url"]]
    result["torch_package_spec"] = "%s --index-url %s" % (" ".join(result["torch_packages"]),
                                                          result["torch_index_url"])
    ok = runtime_ok(accelerator, detection)
    result["runtime_ok"] = ok
    result["reboot_required"] = not ok
    result["reboot_reasons"] = []
    if not ok:
        result["reboot_reasons"] = list(detection.get("reboot_pending_reasons") or []) or [
            "%s does not see the GPU yet: the kernel driver loads after a reboot" % result["runtime_check"]]
    for extra in detection.get("warnings") or []:
        if extra not in warnings:
            warnings.append(extra)
    return result


def _plan_nvidia(result, detection, distro, opts, names=None):
    warnings = result["warnings"]
    nv = detection.get("nvidia") or {}
    installed = nv.get("driver_version") if nv.get("smi_ok") else None
    branch_pin = opts["nvidia_branch"]
    owned = nv.get("installed_packages") or []
    components = None
    foreign = "NVIDIA driver %s is installed outside the distribution's driver packages: keeping it" % installed
    if distro["nvidia"] == "debian-non-free":
        if branch_pin:
            warnings.append("%s=%s is ignored on %s: only the distribution's nvidia-driver (%s series) is "
                            "available" % (_label(names, "nvidia_branch"), branch_pin, distro["name"],
                                           distro["nvidia_default_branch"]))
        if installed and "nvidia-driver" not in owned:
            package, source, branch = None, "existing", driver_branch(installed)
            warnings.append(foreign + " (remove it to use Debian's nvidia-driver)")
        else:
            package, source = "nvidia-driver", "distribution"
            branch = driver_branch(installed) or distro["nvidia_default_branch"]
    else:
        ud = detection.get("ubuntu_drivers") or {}
        kept = [p for p in owned if driver_branch(p)]
        if branch_pin:
            package, source = "nvidia-driver-%s" % branch_pin, "pinned"
        elif kept:
            # an installed driver stays (no churn on re-runs); pin nvidia_branch to change it
            package, source = kept[0], "installed"
        elif installed:
            package, source = None, "existing"
            warnings.append(foreign + " (set %s to replace it)" % _label(names, "nvidia_branch"))
        elif ud.get("recommended"):
            package, source = ud["recommended"], "ubuntu-drivers"
        else:
            package, source = "nvidia-driver-%s" % distro["nvidia_default_branch"], "fallback"
            warnings.append("ubuntu-drivers gave no recommendation (not installed yet, or check mode): assuming "
                            "%s" % package)
        branch = driver_branch(package) if package else driver_branch(installed)
    if package is None:
        packages = []
    elif distro["id"] == "debian":
        # Enabled in the existing Debian sources (a second .sources file for the same suites would clash over
        # Signed-By); see roles/gpu_driver/tasks/install-nvidia.yml.
        components = {"components": list(DEBIAN_COMPONENTS),
                      "suites": [distro["codename"], "%s-updates" % distro["codename"],
                                 "%s-security" % distro["codename"]]}
        packages = [_headers_package(distro, opts), "nvidia-driver", "firmware-misc-nonfree", "nvidia-smi"]
    else:
        packages = [_headers_package(distro, opts), package]
    expected = installed or branch
    if installed and source == "pinned" and driver_branch(installed) != branch:
        warnings.append("NVIDIA driver %s is loaded but %s is pinned: the new driver takes effect after a "
                        "reboot" % (installed, package))
        expected = branch
    caps = [g.get("compute_cap") for g in nv.get("gpus") or [] if g.get("compute_cap")]
    variant, cuda_warnings = choose_cuda_variant(expected, opts["torch_floor_cuda"], caps)
    warnings.extend(cuda_warnings)
    if detection.get("secure_boot"):
        if distro["id"] == "debian":
            warnings.append("Secure Boot is enabled: the DKMS-built nvidia module is unsigned for your firmware; "
                            "enroll the DKMS MOK key (mokutil --import /var/lib/dkms/mok.pub) at the next boot "
                            "or disable Secure Boot, otherwise the module will not load")
        else:
            warnings.append("Secure Boot is enabled: if %s builds its module with DKMS, enroll the MOK key "
                            "(mokutil --import /var/lib/shim-signed/mok/MOK.der) at the next boot or use the "
                            "Canonical-signed linux-modules-nvidia-%s-* packages" % (package, branch))
    names = sorted(set(d["name"] for d in detection.get("render_gpus") or [] if d.get("vendor") == "nvidia"))
    if len(names) > 1:
        warnings.append("mixed NVIDIA models (%s): ComfyUI uses the first CUDA device unless "
                        "CUDA_VISIBLE_DEVICES selects one" % ", ".join(names))
    if nv.get("nouveau_bound"):
        warnings.append("nouveau is driving the NVIDIA GPU now: it is blacklisted and a reboot is needed")
    result.update({
        "packages": packages,
        "apt_components": components,
        "blacklist_nouveau": opts["blacklist_nouveau"],
        "nvidia": {"driver_package": package, "driver_source": source, "driver_branch": branch,
                   "installed_driver_version": installed, "cuda_wheel": variant},
        "torch_variant": variant,
        "torch_index_url": TORCH_INDEX_BASE + variant,
        "runtime_check": "nvidia-smi",
    })


def _plan_amd(result, detection, distro, opts, names=None):
    warnings = result["warnings"]
    _check_rocm(opts, distro, names)
    version = opts["rocm_version"]
    release = ROCM_RELEASES[version]
    suite = distro["rocm_suite"]
    keyring = "%s/rocm.asc" % opts["keyring_dir"]
    amdgpu_url = "https://repo.radeon.com/amdgpu/%s/ubuntu" % version
    rocm_url = "https://repo.radeon.com/rocm/apt/%s" % version
    repos = [
        _repo("amdgpu", deb822("deb", amdgpu_url, suite, "main", keyring, "amd64"), ROCM_KEY_URL, keyring),
        _repo("rocm", deb822("deb", rocm_url, suite, "main", keyring, "amd64"), ROCM_KEY_URL, keyring),
    ]
    prefs = [{"name": "rocm", "path": "%s/visionsuit-rocm-pin-600" % PREFERENCES_DIR,
              "content": "Package: *\nPin: release o=repo.radeon.com\nPin-Priority: 600\n"}]
    packages = []
    if opts["amd_dkms"]:
        packages += [_headers_package(distro, opts), "amdgpu-dkms"]
        if detection.get("secure_boot"):
            warnings.append("Secure Boot is enabled: amdgpu-dkms builds an unsigned module; enroll the DKMS MOK "
                            "key at the next boot or set %s: false to use the in-kernel amdgpu"
                            % _label(names, "amd_dkms"))
    packages += list(AMD_PACKAGES)
    if distro["id"] == "debian":
        warnings.append("ROCm on Debian 12 uses AMD's Ubuntu 22.04 (jammy) packages; AMD supports it for "
                        "Instinct accelerators and best-effort for Radeon")
    names = sorted(set(d["name"] for d in detection.get("render_gpus") or [] if d.get("vendor") == "amd"))
    if len(names) > 1:
        warnings.append("mixed AMD models (%s): ComfyUI uses the first HIP device unless HIP_VISIBLE_DEVICES "
                        "selects one" % ", ".join(names))
    result.update({
        "packages": packages,
        "apt_repositories": repos,
        "apt_preferences": prefs,
        "service_groups": list(AMD_GROUPS),
        "rocm": {"version": version, "amdgpu_repo_url": amdgpu_url, "rocm_repo_url": rocm_url, "suite": suite,
                 "installer_url": "https://repo.radeon.com/amdgpu-install/%s/ubuntu/%s/amdgpu-install_%s.%s-1_all.deb"
                 % (version, suite, version, release["build"]),
                 "keyring_url": ROCM_KEY_URL, "keyring_path": keyring},
        "torch_variant": release["torch"],
        "torch_index_url": TORCH_INDEX_BASE + release["torch"],
        "runtime_check": "rocminfo",
    })
