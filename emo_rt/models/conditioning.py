"""The per-call tensors the UNet layers read by their index: explicit inputs, no banks or hooks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Conditioning:
    """Everything a Backbone/ReferenceNet forward conditions on, besides latents and timestep.

    reference_features: per spatial attention layer i, (B, L_i, C_i) ReferenceNet tokens.
    audio_tokens:       (B, f, T_a, D_a) per-frame audio tokens.
    motion_features:    per temporal layer j, (B, n, C_j, h_j, w_j) ReferenceNet features of the
                        n motion frames.
    speed_tokens:       (B, f, T_s, D_s) per-frame head-speed tokens.
    """

    num_frames: int = 1
    reference_features: Sequence[torch.Tensor] | None = None
    audio_tokens: torch.Tensor | None = None
    motion_features: Sequence[torch.Tensor] | None = None
    speed_tokens: torch.Tensor | None = None

    def audio_tokens_per_frame(self) -> torch.Tensor:
        """(B, f, T, D) -> (B*f, T, D), matching the frame-major 2D batch."""
        if self.audio_tokens is None:
            raise ValueError("this Backbone has audio attention: audio_tokens are required")
        b, f, t, d = self.audio_tokens.shape
        return self.audio_tokens.reshape(b * f, t, d)


# Classifier-free guidance: "no reference" and "no audio" are all-zero tensors of the usual shapes.
# Training's conditioning dropout must use these same functions, so render-time guidance matches.
def null_reference_features(reference_features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(x) for x in reference_features]


def null_audio_tokens(audio_tokens: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(audio_tokens)


# The anchor (EmoConfig.anchor): the clean frame every window copies from, the reference's latents. Not the
# last frame drawn: training only ever shows clean anchors, so a render anchored on its own frames adds
# each window's error to the next (lab/notes/default_model_v2.md). Training and the renderer move between
# frames and what is diffused with these same functions.
def to_diffused(frames: torch.Tensor, anchor: torch.Tensor | None, mode: str) -> torch.Tensor:
    """(B, C, f, h, w) frame latents -> what the Backbone denoises: minus the anchor (B, C, h, w) for
    mode "residual", the frames themselves otherwise."""
    return frames - anchor[:, :, None] if mode == "residual" else frames


def from_diffused(latents: torch.Tensor, anchor: torch.Tensor | None, mode: str) -> torch.Tensor:
    """The inverse of `to_diffused`."""
    return latents + anchor[:, :, None] if mode == "residual" else latents
