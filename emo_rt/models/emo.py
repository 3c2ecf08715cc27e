"""EmoModel: the five parts plus VAE and audio encoder, and the model directory format.

A model directory is `config.json` (EmoConfig) beside one `<part>.safetensors` per part in
`EmoModel.PARTS`. Saving writes each file to a temporary name and renames it into place.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from emo_rt.config import EmoConfig
from emo_rt.errors import WeightsError
from emo_rt.io.files import atomic_path
from emo_rt.models.audio import AudioEncoder, AudioProjector
from emo_rt.models.face_locator import FaceLocator
from emo_rt.models.speed import SpeedEncoder
from emo_rt.models.unet import Backbone, ReferenceNet
from emo_rt.models.vae import build_vae, decode_scaled, encode_scaled


class EmoModel(nn.Module):
    PARTS = ("vae", "reference_net", "backbone", "audio_encoder", "audio_projector",
             "speed_encoder", "face_locator")

    def __init__(self, config: EmoConfig):
        super().__init__()
        self.config = config
        self.vae = build_vae(config.vae, config.resolution)
        self.reference_net = ReferenceNet(config)
        self.backbone = Backbone(config)
        self.audio_encoder = AudioEncoder(config.audio)
        self.audio_projector = AudioProjector(config.audio)
        self.speed_encoder = SpeedEncoder(config.speed)
        self.face_locator = FaceLocator(config.face_locator, config.unet.in_channels)

    # ---- VAE helpers: images in [-1, 1] <-> scaled latents --------------------------------
    def encode_images(self, images: torch.Tensor, sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, C, H/8, W/8) latents times the VAE's scaling factor."""
        return encode_scaled(self.vae, images, sample, generator)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) scaled latents -> (N, 3, H, W) images in [-1, 1]."""
        return decode_scaled(self.vae, latents)

    # ---- model directory ------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write config.json and one safetensors file per part (optionally cast, e.g. fp16)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for part in self.PARTS:
            state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
                     .detach().contiguous().cpu() for k, v in getattr(self, part).state_dict().items()}
            path = directory / f"{part}.safetensors"
            with atomic_path(path) as tmp:
                save_file(state, str(tmp), metadata={"format": "pt", "part": part})
        self.config.save(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> "EmoModel":
        directory = Path(directory)
        if not directory.is_dir():
            raise WeightsError(f"model directory {directory} does not exist")
        config = EmoConfig.load(directory)
        missing = [p for p in cls.PARTS if not (directory / f"{p}.safetensors").is_file()]
        if missing:
            raise WeightsError(f"{directory} is missing weights: {', '.join(p + '.safetensors' for p in missing)}")
        model = cls(config)
        for part in cls.PARTS:
            load_part(getattr(model, part), directory / f"{part}.safetensors")
        return model.to(device=device, dtype=dtype).eval()


def load_part(module: nn.Module, path: Path) -> None:
    """Load one safetensors file strictly into `module`, with one-line errors for mismatches."""
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path} is not a readable safetensors file: {err}") from None
    own = module.state_dict()
    unexpected = sorted(set(state) - set(own))
    absent = sorted(set(own) - set(state))
    if unexpected or absent:
        raise WeightsError(f"{path} does not match config.json: {len(absent)} missing keys "
                           f"(e.g. {absent[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise WeightsError(f"{path} does not match config.json: {k} has shape "
                           f"{tuple(state[k].shape)}, the config needs {tuple(own[k].shape)}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
