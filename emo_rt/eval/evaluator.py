"""The face evaluator: a small CNN that reads mouth opening, lip width, brow raise, blink and head
pose (yaw, pitch, roll) off a face-centred crop, so generated frames can be scored against ground
truth. The trained weights ship in emo_rt/eval/weights/ (card: its README.md); they are trained by
`emo-rt train-evaluator` on the synthetic corpus's train split only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .data import LABELS
from .identity import IDENTITY_WEIGHTS, IdentityEmbedder
from .stored import load_network, save_network

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FILE = "evaluator.safetensors"
CONFIG_FILE = "evaluator.json"


@dataclass(frozen=True)
class EvaluatorConfig:
    crop: float = 0.8  # the central crop * R square of a frame is read (the face; crops are 1.6 x the face box)
    input_size: int = 80  # ... area-resized to this side: brows move ~3 px, eyelids ~4 px at full scale
    channels: tuple[int, ...] = (16, 32, 64, 128)  # one stride-2 stage each: 80 -> 40 -> 20 -> 10 -> 5
    hidden: int = 256  # width of the feature vector before the label head
    labels: tuple[str, ...] = LABELS
    # network outputs are (label - offset) / scale: all of order 1
    offsets: tuple[float, ...] = (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    scales: tuple[float, ...] = (1.0, 0.12, 1.0, 1.0, 30.0, 20.0, 15.0)
    loss_weights: tuple[float, ...] = (1.0, 0.5, 3.0, 3.0, 1.0, 1.0, 1.0)  # brows and eyelids are small: weighted up
    training: dict = field(default_factory=dict, compare=False)  # how the shipped weights were made



def _conv(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class FaceEvaluator(nn.Module):
    """images (B, 3, S, S) in [-1, 1] -> labels (B, L), normalised by the config's offsets/scales."""

    def __init__(self, config: EvaluatorConfig = EvaluatorConfig()):
        super().__init__()
        self.config = config
        layers, c_in = [], 3
        for i, c in enumerate(config.channels):
            layers.append(_conv(c_in, c, 5 if i == 0 else 3, 2))  # halves the side
            if i in (1, 2):
                layers.append(_conv(c, c, 3, 1))  # one more layer at 16 and 8 px (mouth, eyes)
            c_in = c
        self.trunk = nn.Sequential(*layers)
        side = config.input_size >> len(config.channels)
        # flatten, not pool: pose and feature positions matter
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, config.hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(config.hidden, len(config.labels))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.trunk(images)))  # (B, L)


def crop_resize(frames: np.ndarray, crop: float, size: int) -> np.ndarray:
    """uint8 (N, R, R, 3) -> (N, size, size, 3): the central crop * R square, resized (area)."""
    side = frames.shape[1]
    keep = int(round(side * crop))
    a = (side - keep) // 2
    interp = cv2.INTER_AREA if keep > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(np.ascontiguousarray(f[a:a + keep, a:a + keep]), (size, size), interpolation=interp)
                     for f in frames])


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) RGB -> float32 (N, 3, S, S) in [-1, 1]."""
    pixels = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(127.5) - 1
    return torch.from_numpy(pixels)


class Evaluator:
    """Inference wrapper: frames in, per-frame labels in the sidecars' units out."""

    def __init__(self, network: FaceEvaluator, identity: IdentityEmbedder | None = None):
        self.network = network.eval()
        self.identity = identity  # the identity embedding (identity.py); None: no identity figures
        self.config = network.config
        self.offsets = np.asarray(self.config.offsets, np.float64)
        self.scales = np.asarray(self.config.scales, np.float64)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "Evaluator":
        """The label network in `directory` (default: the shipped one), with its identity embedding
        when the directory has one."""
        directory = Path(directory) if directory is not None else WEIGHTS_DIR
        network = load_network(directory, CONFIG_FILE, WEIGHTS_FILE, EvaluatorConfig, FaceEvaluator)
        has_identity = (directory / IDENTITY_WEIGHTS).is_file()
        return cls(network, IdentityEmbedder.from_pretrained(directory) if has_identity else None)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> None:
        """Floating tensors stored as `dtype` (fp16 by default: the outputs move by < 1e-3)."""
        directory = Path(directory)
        save_network(self.network, directory, CONFIG_FILE, WEIGHTS_FILE, dtype)
        if self.identity is not None:
            self.identity.save_pretrained(directory, dtype)

    def inputs(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, R, R, 3) frames (any R) -> the network's input (N, 3, S, S); frames already at
        S x S are taken as already cropped and resized."""
        if frames.shape[1] != self.config.input_size:
            frames = crop_resize(frames, self.config.crop, self.config.input_size)
        return to_tensor(frames)

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """uint8 (N, R, R, 3) -> (N, L) labels in sidecar units (columns in `config.labels` order)."""
        out = []
        for i in range(0, len(frames), batch):
            out.append(self.network(self.inputs(frames[i:i + batch])).double().numpy())
        raw = np.concatenate(out) if out else np.zeros((0, len(self.config.labels)))
        return raw * self.scales + self.offsets

    @torch.no_grad()
    def features(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """uint8 (N, R, R, 3) -> (N, hidden [+ identity dim]): the label network's hidden layer, beside
        the identity embedding when there is one (the distribution distances' feature space)."""
        out = [self.network.features(self.network.trunk(self.inputs(frames[i:i + batch]))).double().numpy()
               for i in range(0, len(frames), batch)]
        hidden = np.concatenate(out) if out else np.zeros((0, self.config.hidden))
        return hidden if self.identity is None else np.concatenate([hidden, self.identity.embed(frames, batch)], 1)

    def measure(self, frames: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
        """uint8 (N, R, R, 3) -> {label: (N,)} in sidecar units."""
        values = self.predict(frames, batch)
        return {name: values[:, i] for i, name in enumerate(self.config.labels)}
