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


# The anchor (EmoConfig.anchor): the frame every window copies from. "residual": the reference's latents;
# "motion": the last motion frame's (the reference's in a clip's first window). A last frame the render
# drew carries its errors: trained only on clean anchors, a render adds each window's error to the next
# (lab/notes/default_model_v2.md), so "motion" is trained on noised anchors. Training and the renderer
# move between frames and what is diffused with these same functions.
def to_diffused(frames: torch.Tensor, anchor: torch.Tensor | None, mode: str) -> torch.Tensor:
    """(B, C, f, h, w) frame latents -> what the Backbone denoises: minus the anchor (B, C, h, w) when
    the model has one, the frames themselves otherwise."""
    return frames if mode == "none" else frames - anchor[:, :, None]


def from_diffused(latents: torch.Tensor, anchor: torch.Tensor | None, mode: str) -> torch.Tensor:
    """The inverse of `to_diffused`."""
    return latents if mode == "none" else latents + anchor[:, :, None]
