"""Audio path: wav2vec2 features (transformers' Wav2Vec2Model) -> per-frame audio tokens.

AudioEncoder: waveform (B, samples) at 16 kHz -> selected hidden states interpolated to the video
frame rate, plus the prosody row(s) when `config.prosody` (models/prosody.py), (B, F, L, D). AudioProjector: stacks the features of frames t-m..t+m for every frame
(edge frames repeat the first/last) and maps them to T tokens per frame, (B, F, T, D_tok).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from emo_rt.config import AudioConfig
from emo_rt.models.prosody import prosody_row


def wav2vec2_config(config: AudioConfig) -> Wav2Vec2Config:
    return Wav2Vec2Config(
        hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        conv_dim=list(config.conv_dim), conv_kernel=list(config.conv_kernel),
        conv_stride=list(config.conv_stride), num_conv_pos_embeddings=config.num_conv_pos_embeddings,
        num_conv_pos_embedding_groups=config.num_conv_pos_embedding_groups,
        feat_extract_norm="group", do_stable_layer_norm=False,
        apply_spec_augment=False,  # never mask features; masked_spec_embed stays for weight loading
    )


class AudioEncoder(nn.Module):
    """(B, samples) waveform -> (B, F, L, D): L selected hidden layers (+ prosody) at F video frames."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        if max(config.feature_layers) > config.num_hidden_layers:
            raise ValueError("feature_layers names a layer the encoder does not have")
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(wav2vec2_config(config))

    def forward(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        features = self.wav2vec2_features(waveform, num_frames)
        if not self.config.prosody:
            return features
        return torch.cat([features, self.prosody(waveform, num_frames)], dim=2)

    def prosody(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B, samples) -> (B, F, 1, D): pitch, voicing, loudness; no weights, host-side in engines."""
        return prosody_row(waveform, num_frames, self.config.sample_rate, self.config.hidden_size)

    def wav2vec2_features(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B, samples) -> (B, F, len(feature_layers), D): what the exported engine computes."""
        # wav2vec2 expects zero-mean unit-variance input (its feature extractor's normalisation)
        waveform = (waveform - waveform.mean(-1, keepdim=True)) / (waveform.std(-1, keepdim=True) + 1e-7)
        out = self.wav2vec2(waveform, output_hidden_states=True)
        hidden = torch.stack([out.hidden_states[i] for i in self.config.feature_layers], dim=2)  # (B, T, L, D)
        b, t, layers, d = hidden.shape
        # linear interpolation from the encoder's 50 Hz to the video frame rate
        hidden = F.interpolate(hidden.reshape(b, t, layers * d).transpose(1, 2), size=num_frames,
                               mode="linear", align_corners=False)
        return hidden.transpose(1, 2).reshape(b, num_frames, layers, d)


def context_windows(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, F, *rest) -> (B, F, 2*radius+1, *rest): frames t-radius..t+radius, edges replicated."""
    frames = x.shape[1]
    offsets = torch.arange(-radius, radius + 1, device=x.device)
    index = (torch.arange(frames, device=x.device)[:, None] + offsets).clamp(0, frames - 1)  # (F, 2m+1)
    return x[:, index]


class AudioProjector(nn.Module):
    """(B, F, L, D) frame features -> (B, F, T, D_tok) tokens from frames t-m..t+m."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        self.config = config
        window = (2 * config.context_frames + 1) * config.num_feature_rows * config.hidden_size
        self.proj = nn.Sequential(
            nn.Linear(window, config.projector_hidden), nn.SiLU(),
            nn.Linear(config.projector_hidden, config.projector_hidden), nn.SiLU(),
            nn.Linear(config.projector_hidden, config.num_tokens * config.token_dim),
        )
        self.norm = nn.LayerNorm(config.token_dim)

    def forward(self, frame_features: torch.Tensor) -> torch.Tensor:
        b, f = frame_features.shape[:2]
        windows = context_windows(frame_features, self.config.context_frames).reshape(b, f, -1)
        tokens = self.proj(windows).reshape(b, f, self.config.num_tokens, self.config.token_dim)
        return self.norm(tokens)

