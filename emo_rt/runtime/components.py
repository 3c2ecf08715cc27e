"""The component interface one pipeline loop runs on, whatever executes it (torch, onnxruntime,
TensorRT). Every method takes and returns torch tensors; shapes as in the model's docs.
"""

from __future__ import annotations

from typing import Protocol

import torch

from emo_rt.config import EmoConfig
from emo_rt.models import EmoModel


class Components(Protocol):
    config: EmoConfig
    name: str  # backend name, for reports

    def encode_audio(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(1, S) 16 kHz -> (1, F, L, D) features at the video frame rate."""

    def project_audio(self, features: torch.Tensor) -> torch.Tensor:
        """(1, F, L, D) -> (1, F, T, D_tok) (frames t-m..t+m per token set)."""

    def encode_speed(self, speed: torch.Tensor) -> torch.Tensor:
        """(1, F) -> (1, F, T, D_tok)."""

    def locate_face(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, R) -> (B, C, h, w)."""

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) in [-1, 1] -> (N, C, h, w) scaled latents."""

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, 3, R, R) in [-1, 1]."""

    def reference_features(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, h, w) -> per Backbone spatial layer (B, L_i, C_i)."""

    def motion_features(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """(B, n, C, h, w) -> per Backbone temporal layer (B, n, C_j, h_j, w_j)."""

    def denoise(self, noisy_latents: torch.Tensor, timestep: torch.Tensor,
                reference_features: list[torch.Tensor], motion_features: list[torch.Tensor],
                audio_tokens: torch.Tensor, speed_tokens: torch.Tensor,
                face_latents: torch.Tensor, anchor_latents: torch.Tensor | None = None) -> torch.Tensor:
        """One Backbone evaluation: (B, C, f, h, w) -> prediction (B, C, f, h, w). anchor_latents
        (B, C, h, w) exactly when the model has an anchor (EmoConfig.anchor)."""


class TorchComponents:
    """Components on an EmoModel in eager PyTorch (optionally torch.compile'd backbone)."""

    name = "torch"

    def __init__(self, model: EmoModel, dtype: torch.dtype = torch.float32, compile: bool = False,
                 attention: str = "auto"):
        from emo_rt.kernels.processors import select_attention

        self.model = model.eval()
        select_attention(model.backbone, attention)  # "auto": fused Triton kernels on CUDA
        self.config = model.config
        self.dtype = dtype
        self.device = next(model.parameters()).device
        self._backbone = torch.compile(model.backbone) if compile else model.backbone
        if compile:
            self.name = "torch-compile"

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, self.dtype)

    @torch.inference_mode()
    def encode_audio(self, waveform, num_frames):
        return self.model.audio_encoder(self._cast(waveform), num_frames)

    @torch.inference_mode()
    def project_audio(self, features):
        return self.model.audio_projector(self._cast(features))

    @torch.inference_mode()
    def encode_speed(self, speed):
        return self.model.speed_encoder(self._cast(speed))

    @torch.inference_mode()
    def locate_face(self, mask):
        return self.model.face_locator(self._cast(mask))

    @torch.inference_mode()
    def encode_images(self, images):
        return self.model.encode_images(self._cast(images))

    @torch.inference_mode()
    def decode_latents(self, latents):
        return self.model.decode_latents(self._cast(latents))

    @torch.inference_mode()
    def reference_features(self, latents):
        return self.model.reference_net.reference_features(self._cast(latents))

    @torch.inference_mode()
    def motion_features(self, latents):
        return self.model.reference_net.motion_features(self._cast(latents))

    @torch.inference_mode()
    def denoise(self, noisy_latents, timestep, reference_features, motion_features, audio_tokens,
                speed_tokens, face_latents, anchor_latents=None):
        anchor = None if anchor_latents is None else self._cast(anchor_latents)
        return self._backbone(self._cast(noisy_latents), timestep.to(self.device), reference_features,
                              motion_features, audio_tokens, speed_tokens, face_latents, anchor)
