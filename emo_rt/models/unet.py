"""SD1.5-shaped UNets: the Backbone (denoiser of one window) and the ReferenceNet.

Both share the 2D layout and key names of diffusers' UNet2DConditionModel for SD1.5
(`conv_in`, `time_embedding`, `down_blocks.i.{resnets,attentions,downsamplers}`, `mid_block`,
`up_blocks.i.{resnets,attentions,upsamplers}`), so SD1.5 weights load by name. The Backbone adds
audio cross-attention inside every spatial layer and a temporal module after every spatial
layer (`*.motion_modules.j`, MotionAdapter's names). The ReferenceNet has neither and no output
head: it returns features.

Layer order (SD1.5 and AnimateDiff): per level, for each layer: resnet -> spatial transformer
(where the level has attention) -> temporal module. Spatial attention layers and temporal
modules are numbered in forward order; that number indexes the feature lists.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn

from emo_rt.config import EmoConfig
from emo_rt.models.conditioning import Conditioning
from emo_rt.models.temporal import TemporalModule
from emo_rt.models.transformer import SpatialTransformer


class _Counter:
    """Hands out consecutive layer indices while the network is built."""

    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value - 1


class _Level(nn.Module):
    """One resolution level: layers of (resnet, spatial transformer?, temporal module?)."""

    def __init__(self, in_channels: list[int], out_channels: int, config: EmoConfig, attention: bool,
                 temporal: bool, audio_dim: int | None, speed_dim: int | None,
                 spatial_ids: _Counter, temporal_ids: _Counter):
        super().__init__()
        u, t = config.unet, config.temporal
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels=c, out_channels=out_channels, temb_channels=u.time_embed_dim,
                          eps=u.resnet_eps, groups=u.norm_num_groups) for c in in_channels)
        self.attentions = nn.ModuleList(
            SpatialTransformer(out_channels, u.num_attention_heads, u.norm_num_groups,
                               spatial_ids.next(), audio_dim, u.use_linear_projection)
            for _ in in_channels) if attention else None
        self.motion_modules = nn.ModuleList(
            TemporalModule(out_channels, t.num_attention_heads, t.norm_num_groups, t.max_positions,
                           temporal_ids.next(), speed_dim)
            for _ in in_channels) if temporal else None

    def layer(self, i: int, x: torch.Tensor, temb: torch.Tensor, cond: Conditioning,
              sinks: "FeatureSinks | None") -> torch.Tensor:
        x = self.resnets[i](x, temb)
        if self.attentions is not None:
            x = self.attentions[i](x, cond, None if sinks is None else sinks.reference)
        if sinks is not None:  # ReferenceNet: the input a temporal module would see here
            sinks.temporal.append(x)
        if self.motion_modules is not None:
            x = self.motion_modules[i](x, cond)
        return x


class FeatureSinks:
    """Lists a ReferenceNet forward fills: normalised self-attention inputs, temporal inputs."""

    def __init__(self) -> None:
        self.reference: list[torch.Tensor] = []  # per spatial attention layer (N, L, C)
        self.temporal: list[torch.Tensor] = []  # per temporal layer (N, C, h, w)


class UNet(nn.Module):
    """The shared SD1.5 layout. `role` is "backbone" (audio + temporal + output) or "reference"."""

    def __init__(self, config: EmoConfig, role: str):
        super().__init__()
        if role not in ("backbone", "reference"):
            raise ValueError(f"unknown UNet role {role!r}")
        self.config = config
        self.role = role
        u = config.unet
        backbone = role == "backbone"
        audio_dim = config.audio.token_dim if backbone else None
        speed_dim = config.speed.token_dim if backbone else None
        spatial_ids, temporal_ids = _Counter(), _Counter()
        ch = u.block_out_channels

        in_channels = config.backbone_in_channels if backbone else u.in_channels
        self.conv_in = nn.Conv2d(in_channels, ch[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(ch[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(ch[0], u.time_embed_dim)

        self.down_blocks = nn.ModuleList()
        skip_channels = [ch[0]]
        for i, out in enumerate(ch):
            in_ch = ch[max(i - 1, 0)]
            level = _Level([in_ch] + [out] * (u.layers_per_block - 1), out, config, u.attention_levels[i],
                           backbone, audio_dim, speed_dim, spatial_ids, temporal_ids)
            skip_channels += [out] * u.layers_per_block
            if i < len(ch) - 1:
                level.downsamplers = nn.ModuleList([Downsample2D(out, use_conv=True, out_channels=out,
                                                                 padding=1, name="op")])
                skip_channels.append(out)
            else:
                level.downsamplers = None
            self.down_blocks.append(level)

        self.mid_block = _MidLevel(config, backbone and config.temporal.mid_block, audio_dim, speed_dim,
                                   spatial_ids, temporal_ids, collect_temporal=config.temporal.mid_block)

        self.up_blocks = nn.ModuleList()
        rev = list(reversed(ch))
        for i, out in enumerate(rev):
            prev = rev[max(i - 1, 0)]
            ins = []
            for j in range(u.layers_per_block + 1):
                skip = skip_channels.pop()
                ins.append((prev if j == 0 else out) + skip)
            level = _Level(ins, out, config, list(reversed(u.attention_levels))[i], backbone,
                           audio_dim, speed_dim, spatial_ids, temporal_ids)
            level.upsamplers = (nn.ModuleList([Upsample2D(out, use_conv=True, out_channels=out)])
                                if i < len(rev) - 1 else None)
            self.up_blocks.append(level)

        self.num_spatial_layers = spatial_ids.value
        self.num_temporal_layers = temporal_ids.value
        if backbone:
            self.conv_norm_out = nn.GroupNorm(u.norm_num_groups, ch[0], eps=u.resnet_eps)
            self.conv_act = nn.SiLU()
            self.conv_out = nn.Conv2d(ch[0], u.out_channels, kernel_size=3, padding=1)

    def _trunk(self, sample: torch.Tensor, timestep: torch.Tensor, cond: Conditioning,
               sinks: FeatureSinks | None) -> torch.Tensor:
        """sample (N, C, h, w), timestep (N,) -> last hidden state (N, C0, h, w)."""
        temb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))
        x = self.conv_in(sample)
        skips = [x]
        for level in self.down_blocks:
            for i in range(len(level.resnets)):
                x = level.layer(i, x, temb, cond, sinks)
                skips.append(x)
            if level.downsamplers is not None:
                x = level.downsamplers[0](x)
                skips.append(x)
        x = self.mid_block(x, temb, cond, sinks)
        for level in self.up_blocks:
            for i in range(len(level.resnets)):
                x = torch.cat([x, skips.pop()], dim=1)
                x = level.layer(i, x, temb, cond, sinks)
            if level.upsamplers is not None:
                x = level.upsamplers[0](x)
        return x


class _MidLevel(nn.Module):
    """resnet -> spatial transformer -> temporal module (AnimateDiff v2) -> resnet."""

    def __init__(self, config: EmoConfig, temporal: bool, audio_dim: int | None, speed_dim: int | None,
                 spatial_ids: _Counter, temporal_ids: _Counter, collect_temporal: bool):
        super().__init__()
        u, t = config.unet, config.temporal
        c = u.block_out_channels[-1]
        self.collect_temporal = collect_temporal
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels=c, out_channels=c, temb_channels=u.time_embed_dim,
                          eps=u.resnet_eps, groups=u.norm_num_groups) for _ in range(2))
        self.attentions = nn.ModuleList([SpatialTransformer(
            c, u.num_attention_heads, u.norm_num_groups, spatial_ids.next(), audio_dim,
            u.use_linear_projection)]) if u.mid_block_attention else None
        self.motion_modules = nn.ModuleList([TemporalModule(
            c, t.num_attention_heads, t.norm_num_groups, t.max_positions, temporal_ids.next(),
            speed_dim)]) if temporal else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, cond: Conditioning,
                sinks: FeatureSinks | None) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        if self.attentions is not None:
            x = self.attentions[0](x, cond, None if sinks is None else sinks.reference)
        if sinks is not None and self.collect_temporal:
            sinks.temporal.append(x)
        if self.motion_modules is not None:
            x = self.motion_modules[0](x, cond)
        return self.resnets[1](x, temb)


class Backbone(UNet):
    """Denoises one window of f frames, conditioned on everything as explicit tensors."""

    def __init__(self, config: EmoConfig):
        super().__init__(config, role="backbone")

    def forward(
        self,
        noisy_latents: torch.Tensor,  # (B, C, f, h, w)
        timestep: torch.Tensor,  # (B,) or ()
        reference_features: list[torch.Tensor],  # per spatial layer i: (B, L_i, C_i)
        motion_features: list[torch.Tensor],  # per temporal layer j: (B, n, C_j, h_j, w_j)
        audio_tokens: torch.Tensor,  # (B, f, T_a, D_a)
        speed_tokens: torch.Tensor,  # (B, f, T_s, D_s)
        face_latents: torch.Tensor,  # (B, C, h, w): FaceLocator(face mask), added to every frame
        anchor_latents: torch.Tensor | None = None,  # (B, C, h, w): the anchor frame (config.anchor != "none")
    ) -> torch.Tensor:  # (B, C, f, h, w): the model prediction (epsilon or v)
        b, c, f, h, w = noisy_latents.shape
        _check_count("reference_features", reference_features, self.num_spatial_layers)
        _check_count("motion_features", motion_features, self.num_temporal_layers)
        if (anchor_latents is None) != (self.config.anchor == "none"):
            raise ValueError(f"anchor_latents: this Backbone's anchor is {self.config.anchor!r}; give them "
                             "exactly when it is not 'none'")
        sample = noisy_latents + face_latents[:, :, None]
        if anchor_latents is not None:
            sample = torch.cat([sample, anchor_latents[:, :, None].expand(-1, -1, f, -1, -1)], dim=1)
        sample = sample.permute(0, 2, 1, 3, 4).reshape(b * f, -1, h, w)  # frame-major 2D batch
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1)
        timestep = timestep.expand(b).repeat_interleave(f) if timestep.numel() == 1 else (
            timestep.repeat_interleave(f))
        cond = Conditioning(num_frames=f, reference_features=reference_features, audio_tokens=audio_tokens,
                            motion_features=motion_features, speed_tokens=speed_tokens)
        x = self._trunk(sample, timestep, cond, sinks=None)
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return x.reshape(b, f, -1, h, w).permute(0, 2, 1, 3, 4)


class ReferenceNet(UNet):
    """Runs the 2D UNet at t=0 on clean latents and returns its features (no output head)."""

    def __init__(self, config: EmoConfig):
        super().__init__(config, role="reference")

    def _features(self, latents: torch.Tensor) -> FeatureSinks:
        sinks = FeatureSinks()
        timestep = torch.zeros(latents.shape[0], device=latents.device, dtype=torch.long)
        self._trunk(latents, timestep, Conditioning(num_frames=1), sinks)
        return sinks

    def reference_features(self, reference_latents: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, h, w) -> per Backbone spatial attention layer i: (B, L_i, C_i)."""
        return self._features(reference_latents).reference

    def motion_features(self, motion_latents: torch.Tensor) -> list[torch.Tensor]:
        """(B, n, C, h, w) -> per Backbone temporal layer j: (B, n, C_j, h_j, w_j)."""
        b, n = motion_latents.shape[:2]
        sinks = self._features(motion_latents.flatten(0, 1))
        return [x.reshape(b, n, *x.shape[1:]) for x in sinks.temporal]

    def forward(self, reference_latents: torch.Tensor) -> list[torch.Tensor]:
        return self.reference_features(reference_latents)


def _check_count(name: str, features: list[torch.Tensor], expected: int) -> None:
    if len(features) != expected:
        raise ValueError(f"{name}: expected {expected} tensors (one per layer), got {len(features)}")
