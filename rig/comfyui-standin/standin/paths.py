# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Directory layout of a ComfyUI checkout: model folders, input/output/temp, file listings."""
from __future__ import annotations

import mimetypes
import os
import time

MODEL_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

# Model folder name -> (sub-directories under models/, accepted extensions). Order as ComfyUI lists them.
MODEL_FOLDERS = {
    "checkpoints": (["checkpoints"], MODEL_EXTENSIONS),
    "configs": (["configs"], {".yaml"}),
    "loras": (["loras"], MODEL_EXTENSIONS),
    "vae": (["vae"], MODEL_EXTENSIONS),
    "text_encoders": (["text_encoders", "clip"], MODEL_EXTENSIONS),
    "diffusion_models": (["unet", "diffusion_models"], MODEL_EXTENSIONS),
    "clip_vision": (["clip_vision"], MODEL_EXTENSIONS),
    "style_models": (["style_models"], MODEL_EXTENSIONS),
    "embeddings": (["embeddings"], MODEL_EXTENSIONS),
    "diffusers": (["diffusers"], {"folder"}),
    "vae_approx": (["vae_approx"], MODEL_EXTENSIONS),
    "controlnet": (["controlnet", "t2i_adapter"], MODEL_EXTENSIONS),
    "gligen": (["gligen"], MODEL_EXTENSIONS),
    "upscale_models": (["upscale_models"], MODEL_EXTENSIONS),
    "custom_nodes": (None, set()),
    "hypernetworks": (["hypernetworks"], MODEL_EXTENSIONS),
    "photomaker": (["photomaker"], MODEL_EXTENSIONS),
    "classifiers": (["classifiers"], {""}),
    "model_patches": (["model_patches"], MODEL_EXTENSIONS),
    "audio_encoders": (["audio_encoders"], MODEL_EXTENSIONS),
}


class Layout:
    """Where things live; every path is derived from the base directory unless overridden."""

    def __init__(self, base_dir, output_dir=None, input_dir=None, temp_dir=None, user_dir=None):
        self.base_dir = os.path.abspath(base_dir)
        self.models_dir = os.path.join(self.base_dir, "models")
        self.output_dir = os.path.abspath(output_dir or os.path.join(self.base_dir, "output"))
        self.input_dir = os.path.abspath(input_dir or os.path.join(self.base_dir, "input"))
        # Like ComfyUI, --temp-directory names the parent of the "temp" folder.
        self.temp_dir = os.path.join(os.path.abspath(temp_dir or self.base_dir), "temp")
        self.user_dir = os.path.abspath(user_dir or os.path.join(self.base_dir, "user"))

    def prepare(self):
        """Create the writable folders; wipe temp/ (previews) as ComfyUI does at start-up."""
        for d in (self.output_dir, self.input_dir, self.user_dir):
            os.makedirs(d, exist_ok=True)
        if os.path.isdir(self.temp_dir):
            for root, dirs, files in os.walk(self.temp_dir, topdown=False):
                for name in files:
                    os.unlink(os.path.join(root, name))
                for name in dirs:
                    os.rmdir(os.path.join(root, name))
        os.makedirs(self.temp_dir, exist_ok=True)

    def folder_dirs(self, folder):
        subdirs, _ = MODEL_FOLDERS[folder]
        if subdirs is None:
            return [os.path.join(self.base_dir, folder)]
        return [os.path.join(self.models_dir, s) for s in subdirs]

    def list_models(self, folder):
        """Sorted relative names ("a.safetensors", "sub/b.safetensors") of the files present right now."""
        _, exts = MODEL_FOLDERS[folder]
        names = set()
        for top in self.folder_dirs(folder):
            if not os.path.isdir(top):
                continue
            for root, dirs, files in os.walk(top, followlinks=True):
                dirs[:] = [d for d in dirs if d != ".git"]
                if "folder" in exts:
                    if root != top:
                        names.add(os.path.relpath(root, top))
                    continue
                for name in files:
                    ext = os.path.splitext(name)[1].lower()
                    if not exts or ext in exts or ("" in exts and ext == ""):
                        names.add(os.path.relpath(os.path.join(root, name), top).replace(os.sep, "/"))
        return sorted(names)

    def model_path(self, folder, name):
        """Full path of a listed model file, or None (never outside the folder)."""
        for top in self.folder_dirs(folder):
            path = os.path.abspath(os.path.join(top, name))
            if os.path.commonpath((path, os.path.abspath(top))) != os.path.abspath(top):
                continue
            if os.path.isfile(path):
                return path
        return None

    def list_input_images(self):
        if not os.path.isdir(self.input_dir):
            return []
        out = []
        for name in os.listdir(self.input_dir):
            if os.path.isfile(os.path.join(self.input_dir, name)):
                kind = mimetypes.guess_type(name)[0] or ""
                if kind.startswith("image/"):
                    out.append(name)
        return sorted(out)

    def directory_by_type(self, kind):
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(kind)

    def annotated(self, name):
        """Split "name.png [output]" into ("name.png", dir) as ComfyUI does; dir is None without annotation."""
        for suffix, kind in ((" [output]", "output"), (" [input]", "input"), (" [temp]", "temp")):
            if name.endswith(suffix):
                return name[: -len(suffix)], self.directory_by_type(kind)
        return name, None


def expand_prefix(prefix, width=0, height=0):
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    for key, value in (("%width%", str(width)), ("%height%", str(height)), ("%year%", str(now.tm_year)),
                       ("%month%", f"{now.tm_mon:02}"), ("%day%", f"{now.tm_mday:02}"),
                       ("%hour%", f"{now.tm_hour:02}"), ("%minute%", f"{now.tm_min:02}"),
                       ("%second%", f"{now.tm_sec:02}")):
        prefix = prefix.replace(key, value)
    return prefix


def save_image_path(prefix, root, width=0, height=0):
    """(folder, base filename, next counter, subfolder) for ``<prefix>_00001_.png`` style names."""
    prefix = expand_prefix(prefix, width, height)
    norm = os.path.normpath(prefix)
    subfolder = os.path.dirname(norm)
    filename = os.path.basename(norm)
    folder = os.path.join(root, subfolder)
    if os.path.commonpath((root, os.path.abspath(folder))) != root:
        raise ValueError(f"Saving image outside the output folder is not allowed. filename_prefix: {prefix}")
    counter = 1
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        entries = []
    plen = len(filename)
    for entry in entries:
        head = entry[: plen + 1]
        if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
            continue
        try:
            digits = int(entry[plen + 1:].split("_")[0])
        except ValueError:
            digits = 0
        counter = max(counter, digits + 1)
    return folder, filename, counter, subfolder
