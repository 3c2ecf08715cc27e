"""Import pretrained weights: SD1.5 UNet -> Backbone + ReferenceNet, AnimateDiff -> temporal modules.

Accepted sources (safe loading only: safetensors, or torch.load(weights_only=True)):
- SD1.5 UNet: a diffusers UNet2DConditionModel directory (`diffusion_pytorch_model.safetensors`),
  a pipeline directory with `unet/`, or a single `.safetensors` file in diffusers keys or in the
  original LDM layout (`model.diffusion_model.*`, converted with diffusers' own converter).
- AnimateDiff: a diffusers MotionAdapter directory, or the original `mm_sd_v15_v2.ckpt` /
  `.safetensors` key layout (`...temporal_transformer.attention_blocks.0...`).

Every import returns an `ImportReport`: which of our tensors were loaded, which stay freshly
initialised (audio, speed, face locator, reference paths...), which source tensors were not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from emo_rt.errors import WeightsError
from emo_rt.models.emo import EmoModel

# diffusers' SD1.5 UNet config, needed to convert an original (LDM) single-file checkpoint
SD15_DIFFUSERS_UNET_CONFIG = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 768,
    "attention_head_dim": 8, "use_linear_projection": False, "class_embed_type": None,
    "addition_embed_type": None, "num_class_embeds": None, "projection_class_embeddings_input_dim": None,
    "transformer_layers_per_block": 1, "upcast_attention": False,
}


@dataclass
class ImportReport:
    """What one import did, per target module (e.g. "backbone")."""

    source: str
    loaded: dict[str, list[str]] = field(default_factory=dict)
    fresh: dict[str, list[str]] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"imported {self.source}"]
        for part in self.loaded:
            fresh = _group(self.fresh[part])
            lines.append(f"  {part}: {len(self.loaded[part])} tensors loaded, "
                         f"{len(self.fresh[part])} freshly initialised ({', '.join(fresh) or 'none'})")
        if self.unused:
            lines.append(f"  not used from the source: {len(self.unused)} tensors ({', '.join(_group(self.unused))})")
        return "\n".join(lines)


def _group(keys: list[str]) -> list[str]:
    """Summarise key names by the module kind they belong to (audio_attn, motion_modules, ...)."""
    kinds = []
    for key in keys:
        parts = key.split(".")
        kind = next((k for k in _KINDS if k in parts), parts[0])  # the most specific kind first
        if kind not in kinds:
            kinds.append(kind)
    return sorted(kinds)


_KINDS = ("audio_attn", "norm_audio", "speed_attn", "norm_speed", "motion_modules", "attn2", "norm2",
          "conv_out", "conv_norm_out", "conv_in", "time_embedding", "attentions", "resnets", "mlp", "proj")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as err:
            raise WeightsError(f"{path} is not a readable safetensors file: {err}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"{path} could not be loaded safely (weights_only=True): {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def _find_weights(source: Path, subfolder: str) -> Path:
    if source.is_file():
        return source
    for directory in (source, source / subfolder):
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
            if (directory / name).is_file():
                return directory / name
    raise WeightsError(f"no weights found in {source} (looked for diffusion_pytorch_model.safetensors, "
                       f"also under {subfolder}/)")


def load_sd15_unet_state(source: str | Path) -> dict[str, torch.Tensor]:
    """SD1.5 UNet weights in diffusers key names, from any accepted source."""
    path = _find_weights(Path(source), "unet")
    state = read_state_dict(path)
    if any(k.startswith("model.diffusion_model.") for k in state):
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        state = convert_ldm_unet_checkpoint(state, SD15_DIFFUSERS_UNET_CONFIG)
    return state


def load_motion_adapter_state(source: str | Path) -> dict[str, torch.Tensor]:
    """AnimateDiff motion-module weights in diffusers MotionAdapter key names."""
    path = _find_weights(Path(source), "motion_adapter")
    state = read_state_dict(path)
    if any("temporal_transformer" in k for k in state):
        from diffusers.loaders.single_file_utils import (
            convert_animatediff_checkpoint_to_diffusers,
        )

        state = convert_animatediff_checkpoint_to_diffusers(state)
    return state


def _load_matching(module: nn.Module, state: dict[str, torch.Tensor], select) -> tuple[list[str], list[str]]:
    """Copy every source tensor whose name `module` has and `select` accepts; shapes must match."""
    own = module.state_dict()
    loaded = []
    for key, value in state.items():
        if key in own and select(key):
            if own[key].shape != value.shape:
                raise WeightsError(f"shape mismatch for {key}: the checkpoint has {tuple(value.shape)}, "
                                   f"this config needs {tuple(own[key].shape)} (wrong preset or checkpoint?)")
            loaded.append(key)
    with torch.no_grad():
        for key in loaded:
            own[key].copy_(state[key].to(own[key].dtype))
    fresh = [k for k in own if k not in set(loaded) and select(k)]
    return loaded, fresh


def import_sd15_unet(model: EmoModel, source: str | Path, zero_init_new: bool = True) -> ImportReport:
    """Load SD1.5 UNet weights into the Backbone's and the ReferenceNet's 2D layers."""
    state = load_sd15_unet_state(source)
    report = ImportReport(source=str(source))
    spatial = lambda key: "motion_modules" not in key  # noqa: E731 - the 2D part only
    used: set[str] = set()
    for name in ("backbone", "reference_net"):
        part_state = _with_anchor_channels(state, model) if name == "backbone" else state
        loaded, fresh = _load_matching(getattr(model, name), part_state, spatial)
        if part_state is not state:
            fresh.append("conv_in.weight (the anchor's input channels, zeros)")
        if not loaded:
            raise WeightsError(f"{source}: no tensor matched the {name}'s 2D layers; is this an SD1.5 UNet?")
        report.loaded[name], report.fresh[name] = loaded, fresh
        used.update(loaded)
    report.unused = sorted(set(state) - used)
    if zero_init_new:
        zero_init_new_branches(model)
    return report


def _with_anchor_channels(state: dict[str, torch.Tensor], model: EmoModel) -> dict[str, torch.Tensor]:
    """For a Backbone that also takes the anchor's latents (EmoConfig.anchor), SD's conv_in kernel
    (C_out, C, 3, 3) widened to (C_out, 2C, 3, 3) with zeros for the anchor's channels: the imported
    network starts out computing SD's function of the noisy latents (as InstructPix2Pix widens it)."""
    kernel = state.get("conv_in.weight")
    wanted = model.backbone.conv_in.weight.shape
    if model.config.anchor == "none" or kernel is None or kernel.shape[1] * 2 != wanted[1]:
        return state
    widened = torch.zeros(kernel.shape[0], wanted[1], *kernel.shape[2:], dtype=kernel.dtype)
    widened[:, :kernel.shape[1]] = kernel
    return {**state, "conv_in.weight": widened}


def import_animatediff(model: EmoModel, source: str | Path) -> ImportReport:
    """Load AnimateDiff motion-module weights into the Backbone's temporal modules."""
    state = load_motion_adapter_state(source)
    report = ImportReport(source=str(source))
    temporal = lambda key: "motion_modules" in key  # noqa: E731
    loaded, fresh = _load_matching(model.backbone, state, temporal)
    if not loaded:
        raise WeightsError(f"{source}: no tensor matched the temporal modules; is this a MotionAdapter?")
    report.loaded["backbone"], report.fresh["backbone"] = loaded, fresh
    report.unused = sorted(set(state) - set(loaded))
    return report


def zero_init_new_branches(model: EmoModel) -> list[str]:
    """Zero the output projections of EMO's new residual branches, so an imported SD1.5 UNet
    starts out computing exactly what it computed before (audio, speed, face locator)."""
    names = []
    for name, module in model.named_modules():
        if name.endswith(("audio_attn.to_out.0", "speed_attn.to_out.0")) or name == "face_locator.conv_out":
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
            names.append(name)
    return names
