# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node types the stand-in knows: their /object_info entries and what "running" them does.

Input/output types, defaults and limits follow ComfyUI's nodes so that workflows validate the same
way; descriptions and tooltips are the stand-in's own words. Nothing is computed for real: images
are small gradients, models are names of files whose headers were checked.
"""
from __future__ import annotations

import json
import os
import random
import string
import zlib

from . import png
from .models import check_checkpoint_file, check_model_file
from .paths import save_image_path

MAX_RESOLUTION = 16384
SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
              "linear_quadratic", "kl_optimal"]


# ---------------------------------------------------------------------------------------------- values
class Image:
    """A batch of images: size, a base colour and whether it shows a gradient ("rendered") or a flat fill."""

    def __init__(self, width, height, batch=1, color=(128, 128, 128), gradient=False):
        self.width, self.height, self.batch = int(width), int(height), int(batch)
        self.color, self.gradient = tuple(color), gradient

    def rows(self):
        if self.gradient:
            return png.gradient_rows(self.width, self.height, self.color)
        return png.solid_rows(self.width, self.height, self.color)

    def __repr__(self):
        return f"Image({self.width}x{self.height}, batch={self.batch})"


class Latent:
    def __init__(self, width, height, batch=1, seed=None):
        self.width, self.height, self.batch, self.seed = width, height, batch, seed

    def __repr__(self):
        return f"{{'samples': Latent({self.batch}, 4, {self.height // 8}, {self.width // 8})}}"


class Loaded:
    """A MODEL, CLIP or VAE: only the files it came from."""

    def __init__(self, kind, files):
        self.kind, self.files = kind, list(files)

    def patched(self, lora):
        return Loaded(self.kind, self.files + [lora])

    def __repr__(self):
        return "<{} from {}>".format(self.kind, ", ".join(self.files) or "nothing")


class Conditioning:
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return f"[[Conditioning({self.text[:40]!r})]]"


def _seed_color(seed):
    rnd = random.Random(seed)  # noqa: S311 - colours, not secrets
    return (rnd.randrange(40, 216), rnd.randrange(40, 216), rnd.randrange(40, 216))


# ---------------------------------------------------------------------------------------------- definitions
class NodeDef:
    """One node type. ``inputs`` maps "required"/"optional"/"hidden" to ordered {name: spec}; a spec is
    ``(type, options)`` where type is a string or a callable(layout) returning the combo list."""

    def __init__(self, name, display_name, category, description, inputs, outputs, run, output_node=False,
                 python_module="nodes", v3=False, validate=None, is_changed=None, output_tooltips=None,
                 reports_progress=False):
        self.name, self.display_name, self.category, self.description = name, display_name, category, description
        self.inputs, self.outputs, self.run, self.output_node = inputs, outputs, run, output_node
        self.python_module, self.v3, self.validate, self.is_changed = python_module, v3, validate, is_changed
        self.output_tooltips = output_tooltips
        self.reports_progress = reports_progress  # spreads the per-node delay over progress steps

    def input_types(self, layout):
        out = {}
        for category, specs in self.inputs.items():
            out[category] = {}
            for name, spec in specs.items():
                if isinstance(spec, str):  # hidden inputs
                    out[category][name] = spec
                    continue
                kind, opts = spec
                if callable(kind):
                    kind = kind(layout)
                out[category][name] = [kind, dict(opts)] if opts is not None else [kind]
        return out

    def info(self, layout):
        inputs = self.input_types(layout)
        types = [o for o in self.outputs]
        info = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
                "output": types, "output_is_list": [False] * len(types), "output_name": list(types)}
        if self.v3:
            info["output_tooltips"] = list(self.output_tooltips or [None] * len(types))
        info.update({"name": self.name, "display_name": self.display_name, "description": self.description,
                     "python_module": self.python_module, "category": self.category,
                     "output_node": self.output_node})
        if self.v3:
            info.update({"deprecated": False, "experimental": False, "api_node": False})
        elif self.output_tooltips is not None:
            info["output_tooltips"] = list(self.output_tooltips)
        return info


def _int(default, lo, hi, step=1, **extra):
    opts = {"default": default, "min": lo, "max": hi}
    if step is not None:
        opts["step"] = step
    opts.update(extra)
    return ("INT", opts)


def _float(default, lo, hi, step, **extra):
    opts = {"default": default, "min": lo, "max": hi, "step": step}
    opts.update(extra)
    return ("FLOAT", opts)


# ---------------------------------------------------------------------------------------------- behaviour
def _load(ctx, folder, name, kinds, check=check_model_file):
    path = ctx.layout.model_path(folder, name)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder}' with filename '{name}' not found.")
    check(path)
    return tuple(Loaded(kind, [name]) for kind in kinds)


def run_checkpoint_loader(ctx, ckpt_name):
    # only checkpoints must hold a detectable model (LoRAs and VAEs have other keys)
    return _load(ctx, "checkpoints", ckpt_name, ("MODEL", "CLIP", "VAE"), check=check_checkpoint_file), None


def run_vae_loader(ctx, vae_name):
    return _load(ctx, "vae", vae_name, ("VAE",)), None


def run_lora_loader(ctx, model, clip, lora_name, strength_model, strength_clip):
    if strength_model == 0 and strength_clip == 0:
        return (model, clip), None
    _load(ctx, "loras", lora_name, ("LORA",))
    return (model.patched(lora_name), clip.patched(lora_name)), None


def run_lora_model_only(ctx, model, lora_name, strength_model):
    if strength_model == 0:
        return (model,), None
    _load(ctx, "loras", lora_name, ("LORA",))
    return (model.patched(lora_name),), None


def run_clip_text_encode(ctx, text, clip):
    return (Conditioning(text),), None


def run_empty_latent(ctx, width, height, batch_size):
    return (Latent(width, height, batch_size),), None


def run_ksampler(ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise):
    for step in range(1, steps + 1):
        ctx.progress(step, steps)
    return (Latent(latent_image.width, latent_image.height, latent_image.batch, seed=seed),), None


def run_vae_decode(ctx, samples, vae):
    if samples.seed is None:
        return (Image(samples.width, samples.height, samples.batch),), None
    return (Image(samples.width, samples.height, samples.batch, _seed_color(samples.seed), gradient=True),), None


def run_vae_encode(ctx, pixels, vae):
    return (Latent(pixels.width, pixels.height, pixels.batch),), None


def run_empty_image(ctx, width, height, batch_size, color):
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    return (Image(width, height, batch_size, rgb),), None


def run_image_blur(ctx, image, blur_radius, sigma):
    return (image,), None


def _load_image_path(ctx, image):
    name, folder = ctx.layout.annotated(image)
    return os.path.join(folder or ctx.layout.input_dir, name)


def run_load_image(ctx, image):
    path = _load_image_path(ctx, image)
    size = png.image_size(path) or (64, 64)
    with open(path, "rb") as fh:
        digest = zlib.crc32(fh.read())
    return (Image(size[0], size[1], 1, _seed_color(digest)), f"Mask({size[0]}x{size[1]})"), None


def validate_load_image(ctx, image):
    name, folder = ctx.layout.annotated(image)
    if not os.path.isfile(os.path.join(folder or ctx.layout.input_dir, name)):
        return f"Invalid image file: {image}"
    return True


def changed_load_image(layout, inputs):
    name, folder = layout.annotated(str(inputs.get("image", "")))
    try:
        st = os.stat(os.path.join(folder or layout.input_dir, name))
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _save(ctx, images, prefix, root, kind, level):
    folder, filename, counter, subfolder = save_image_path(prefix, root, images.width, images.height)
    text = {}
    if ctx.prompt is not None:
        text["prompt"] = json.dumps(ctx.prompt)
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        text[str(key)] = json.dumps(value)
    results = []
    for batch_number in range(images.batch):
        name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        data = png.encode_png(images.width, images.height, images.rows(), text, level)
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return (), {"images": results}


def run_save_image(ctx, images, filename_prefix):
    return _save(ctx, images, filename_prefix, ctx.layout.output_dir, "output", 4)


def run_preview_image(ctx, images):
    prefix = "ComfyUI_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))  # noqa: S311
    return _save(ctx, images, prefix, ctx.layout.temp_dir, "temp", 1)


def _models(folder):
    return lambda layout: layout.list_models(folder)


HIDDEN_SAVE = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

NODES = {n.name: n for n in [
    NodeDef("CheckpointLoaderSimple", "Load Checkpoint", "loaders",
            "Reads a checkpoint file and provides its diffusion model, text encoder and VAE.",
            {"required": {"ckpt_name": (_models("checkpoints"), {"tooltip": "Checkpoint file to read."})}},
            ["MODEL", "CLIP", "VAE"], run_checkpoint_loader,
            output_tooltips=["Diffusion model of the checkpoint.", "Text encoder of the checkpoint.",
                             "VAE of the checkpoint."]),
    NodeDef("VAELoader", "Load VAE", "loaders", "",
            {"required": {"vae_name": (_models("vae"), None)}}, ["VAE"], run_vae_loader),
    NodeDef("LoraLoader", "Load LoRA", "loaders",
            "Applies a LoRA file to a diffusion model and its text encoder; loaders can be chained.",
            {"required": {
                "model": ("MODEL", {"tooltip": "Diffusion model to patch."}),
                "clip": ("CLIP", {"tooltip": "Text encoder to patch."}),
                "lora_name": (_models("loras"), {"tooltip": "LoRA file to apply."}),
                "strength_model": _float(1.0, -100.0, 100.0, 0.01, tooltip="Weight on the diffusion model; "
                                         "negative values invert the effect."),
                "strength_clip": _float(1.0, -100.0, 100.0, 0.01, tooltip="Weight on the text encoder; "
                                        "negative values invert the effect."),
            }},
            ["MODEL", "CLIP"], run_lora_loader,
            output_tooltips=["Patched diffusion model.", "Patched text encoder."]),
    NodeDef("LoraLoaderModelOnly", "LoraLoaderModelOnly", "loaders", "",
            {"required": {"model": ("MODEL", None), "lora_name": (_models("loras"), None),
                          "strength_model": _float(1.0, -100.0, 100.0, 0.01)}},
            ["MODEL"], run_lora_model_only),
    NodeDef("CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning",
            "Turns a text prompt into conditioning for the sampler.",
            {"required": {
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "Prompt text."}),
                "clip": ("CLIP", {"tooltip": "Text encoder to use."}),
            }},
            ["CONDITIONING"], run_clip_text_encode, output_tooltips=["Conditioning built from the text."]),
    NodeDef("KSampler", "KSampler", "sampling",
            "Denoises a latent step by step, guided by the positive and negative conditioning.",
            {"required": {
                "model": ("MODEL", {"tooltip": "Diffusion model."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Noise seed."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Number of denoising steps."}),
                "cfg": _float(8.0, 0.0, 100.0, 0.1, round=0.01, tooltip="Classifier-free guidance scale."),
                "sampler_name": (SAMPLERS, {"tooltip": "Sampling algorithm."}),
                "scheduler": (SCHEDULERS, {"tooltip": "Noise schedule."}),
                "positive": ("CONDITIONING", {"tooltip": "What the image should show."}),
                "negative": ("CONDITIONING", {"tooltip": "What the image should avoid."}),
                "latent_image": ("LATENT", {"tooltip": "Latent to denoise."}),
                "denoise": _float(1.0, 0.0, 1.0, 0.01, tooltip="Share of the noise schedule to apply."),
            }},
            ["LATENT"], run_ksampler, output_tooltips=["Denoised latent."], reports_progress=True),
    NodeDef("EmptyLatentImage", "Empty Latent Image", "latent", "Makes a blank latent batch of the given size.",
            {"required": {
                "width": _int(512, 16, MAX_RESOLUTION, 8, tooltip="Width in pixels."),
                "height": _int(512, 16, MAX_RESOLUTION, 8, tooltip="Height in pixels."),
                "batch_size": _int(1, 1, 4096, None, tooltip="Images per batch."),
            }},
            ["LATENT"], run_empty_latent, output_tooltips=["Blank latent batch."]),
    NodeDef("VAEDecode", "VAE Decode", "latent", "Decodes latents into pixel images.",
            {"required": {"samples": ("LATENT", {"tooltip": "Latents to decode."}),
                          "vae": ("VAE", {"tooltip": "VAE to decode with."})}},
            ["IMAGE"], run_vae_decode, output_tooltips=["Decoded images."]),
    NodeDef("VAEEncode", "VAE Encode", "latent", "",
            {"required": {"pixels": ("IMAGE", None), "vae": ("VAE", None)}}, ["LATENT"], run_vae_encode),
    NodeDef("EmptyImage", "EmptyImage", "image", "",
            {"required": {
                "width": _int(512, 1, MAX_RESOLUTION),
                "height": _int(512, 1, MAX_RESOLUTION),
                "batch_size": _int(1, 1, 4096, None),
                "color": _int(0, 0, 0xFFFFFF, display="color"),
            }},
            ["IMAGE"], run_empty_image),
    NodeDef("ImageBlur", None, "image/postprocessing", "",
            {"required": {
                "image": ("IMAGE", {}),
                "blur_radius": _int(1, 1, 31),
                "sigma": _float(1.0, 0.1, 10.0, 0.1),
            }},
            ["IMAGE"], run_image_blur, python_module="comfy_extras.nodes_post_processing", v3=True),
    NodeDef("LoadImage", "Load Image", "image", "",
            {"required": {"image": (lambda layout: layout.list_input_images(), {"image_upload": True})}},
            ["IMAGE", "MASK"], run_load_image, validate=validate_load_image, is_changed=changed_load_image),
    NodeDef("SaveImage", "Save Image", "image", "Writes the images as PNG files into the output folder.",
            {"required": {
                "images": ("IMAGE", {"tooltip": "Images to write."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": "Start of the file names; may "
                                               "contain sub-folders and %width%/%height%/%date% style fields."}),
            }, "hidden": dict(HIDDEN_SAVE)},
            [], run_save_image, output_node=True),
    NodeDef("PreviewImage", "Preview Image", "image", "Writes the images as temporary previews.",
            {"required": {"images": ("IMAGE", None)}, "hidden": dict(HIDDEN_SAVE)},
            [], run_preview_image, output_node=True),
]}


def object_info(layout, name=None):
    if name is None:
        return {n: d.info(layout) for n, d in NODES.items()}
    node = NODES.get(name)
    return {name: node.info(layout)} if node else {}
