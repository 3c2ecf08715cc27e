"""The evaluator's identity embedding (a CSIM analogue): a small CNN maps the face crop to a unit
vector, trained by metric learning (a cosine-softmax over the train-split identities) so that frames
of one identity lie close whatever its expression and pose, and other identities lie apart. Identity
similarity = the cosine of a frame's embedding to the reference's. Weights ship beside the label
network in emo_rt/eval/weights/ (identity.safetensors, identity.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .stored import load_network, save_network

IDENTITY_WEIGHTS = "identity.safetensors"
IDENTITY_CONFIG = "identity.json"


@dataclass(frozen=True)
class IdentityConfig:
    crop: float = 0.8  # the central crop * R square of a frame: the face with its hat, hair and glasses
    input_size: int = 64
    channels: tuple[int, ...] = (24, 48, 96, 128)  # one stride-2 stage each: 64 -> 32 -> 16 -> 8 -> 4
    dim: int = 64  # embedding size
    training: dict = field(default_factory=dict, compare=False)  # how the shipped weights were made



class IdentityEncoder(nn.Module):
    """images (B, 3, S, S) in [-1, 1] -> (B, dim) unit vectors."""

    def __init__(self, config: IdentityConfig = IdentityConfig()):
        super().__init__()
        self.config = config
        layers, c_in = [], 3
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.trunk = nn.Sequential(*layers)
        side = config.input_size >> len(config.channels)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, 256), nn.ReLU(inplace=True),
                                  nn.Linear(256, config.dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.trunk(images)), dim=-1)


class IdentityEmbedder:
    """Inference wrapper: uint8 frames in, embeddings and similarities out."""

    def __init__(self, network: IdentityEncoder):
        self.network = network.eval()
        self.config = network.config

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "IdentityEmbedder":
        return cls(load_network(Path(directory), IDENTITY_CONFIG, IDENTITY_WEIGHTS, IdentityConfig, IdentityEncoder))

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> None:
        save_network(self.network, Path(directory), IDENTITY_CONFIG, IDENTITY_WEIGHTS, dtype)

    def inputs(self, frames: np.ndarray) -> torch.Tensor:
        from .evaluator import crop_resize, to_tensor

        return to_tensor(crop_resize(frames, self.config.crop, self.config.input_size))

    @torch.no_grad()
    def embed(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """uint8 (N, R, R, 3) -> float64 (N, dim) unit vectors."""
        out = [self.network(self.inputs(frames[i:i + batch])).double().numpy() for i in range(0, len(frames), batch)]
        return np.concatenate(out) if out else np.zeros((0, self.config.dim))

    def similarity(self, frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """(N,) cosine of each frame's embedding to the reference image's (R, R, 3)."""
        return self.embed(frames) @ self.embed(reference[None])[0]
