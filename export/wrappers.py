"""Export wrappers: each sub-network as an nn.Module with flat tensor inputs and a tuple of tensor
outputs, calling the model parts unchanged (no patched forwards). One class per ExportSpec."""

from __future__ import annotations

import torch
from torch import nn

from emo_rt.models import EmoModel
from emo_rt.models.vae import decode_scaled, encode_scaled


class PartCall(nn.Module):
    """One method of one model part (`part.method`, unchanged) on one tensor; its output, or its
    list of outputs, as a tuple."""

    part: str
    method: str = "forward"

    def __init__(self, model: EmoModel):
        super().__init__()
        self.add_module(self.part, getattr(model, self.part))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = getattr(getattr(self, self.part), self.method)(x)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)


class ReferenceFeatures(PartCall):
    """reference_latents (1, 4, h, w) -> per Backbone spatial layer i: (1, L_i, C_i)."""

    part, method = "reference_net", "reference_features"


class MotionFeatures(PartCall):
    """motion_latents (1, n, 4, h, w) -> per Backbone temporal layer j: (1, n, C_j, h_j, w_j)."""

    part, method = "reference_net", "motion_features"


class DenoiseStep(nn.Module):
    """One Backbone evaluation with the feature lists flattened into positional inputs:
    (noisy_latents, timestep, reference_feature_0.., motion_feature_0.., audio_tokens, speed_tokens,
    face_latents(, anchor_latents)) -> (prediction,). timestep is float32 whatever the precision (Euler-type samplers
    use fractional timesteps; the Backbone's sinusoidal embedding computes in float32 anyway)."""

    def __init__(self, model: EmoModel):
        super().__init__()
        self.backbone = model.backbone
        self.num_reference = model.backbone.num_spatial_layers
        self.num_motion = model.backbone.num_temporal_layers

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor]:
        noisy_latents, timestep = inputs[:2]
        reference = list(inputs[2: 2 + self.num_reference])
        motion = list(inputs[2 + self.num_reference: 2 + self.num_reference + self.num_motion])
        audio_tokens, speed_tokens, face_latents, *anchor = inputs[2 + self.num_reference + self.num_motion:]
        return (self.backbone(noisy_latents, timestep, reference, motion, audio_tokens, speed_tokens,
                              face_latents, *anchor),)


class AudioFrames(nn.Module):
    """waveform (1, S), frame_grid (F,) -> audio_features (1, F, len(feature_layers), D).

    The frame count is a shape, not a value: only frame_grid's length is read, so the exporter
    traces it as a symbolic dimension and TensorRT sees an ordinary dynamic axis (an int input
    would make the interpolation size data-dependent). The prosody row (no weights, FFT-based) is
    not in the engine: the backends append it on the host."""

    def __init__(self, model: EmoModel):
        super().__init__()
        self.audio_encoder = model.audio_encoder

    def forward(self, waveform: torch.Tensor, frame_grid: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.audio_encoder.wav2vec2_features(waveform, frame_grid.shape[0]),)


class AudioTokens(PartCall):
    """audio_features (1, F, L, D) -> audio_tokens (1, F, T, D_tok)."""

    part = "audio_projector"


class SpeedTokens(PartCall):
    """head_speed (1, F) -> speed_tokens (1, F, T, D_tok)."""

    part = "speed_encoder"


class FaceLatents(PartCall):
    """face_mask (1, 1, R, R) -> face_latents (1, 4, h, w)."""

    part = "face_locator"


class VaeEncoder(nn.Module):
    """images (N, 3, R, R) in [-1, 1] -> latents (N, 4, h, w), scaled (the posterior's mode).

    Holds only the VAE: holding the EmoModel would put every part's weights in the graph."""

    def __init__(self, model: EmoModel):
        super().__init__()
        self.vae = model.vae

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        return (encode_scaled(self.vae, images),)


class VaeDecoder(nn.Module):
    """latents (N, 4, h, w) scaled -> images (N, 3, R, R) in [-1, 1]."""

    def __init__(self, model: EmoModel):
        super().__init__()
        self.vae = model.vae

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor]:
        return (decode_scaled(self.vae, latents),)
