"""Typed configs, one dataclass per model part, with the `sd15` and `tiny` presets.

A model directory holds `config.json` (an `EmoConfig`, nested) beside one `<part>.safetensors`
per part. Presets:
- `sd15`: the 2D UNet is shaped exactly like Stable Diffusion 1.5's (so its weights load), the
  temporal modules like AnimateDiff v2's motion modules, the audio encoder like wav2vec2-base.
- `tiny`: the same code at CPU scale (tests, and the shipped default model).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from emo_rt.errors import WeightsError
from emo_rt.parse import ParseError, parse


@dataclass(frozen=True)
class UNetConfig:
    """2D UNet shared in shape by the Backbone and the ReferenceNet (SD1.5 layout)."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    # which resolution levels have transformer (attention) layers; up levels mirror these
    attention_levels: tuple[bool, ...] = (True, True, True, False)
    layers_per_block: int = 2
    num_attention_heads: int = 8
    norm_num_groups: int = 32
    resnet_eps: float = 1e-5
    use_linear_projection: bool = False  # SD1.5: 1x1 convs around the transformer
    mid_block_attention: bool = True

    def __post_init__(self) -> None:
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError("attention_levels must have one entry per block_out_channels level")

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class TemporalConfig:
    """AnimateDiff-shaped motion modules inserted after every spatial layer of the Backbone."""

    num_attention_heads: int = 8
    norm_num_groups: int = 32
    max_positions: int = 32  # sinusoidal frame position table length (motion + window frames)
    mid_block: bool = True  # AnimateDiff v2 has a motion module in the mid block


@dataclass(frozen=True)
class AudioConfig:
    """wav2vec2 encoder (transformers' Wav2Vec2Model) and the per-frame audio projector."""

    sample_rate: int = 16000
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)  # product 320 samples: 50 features/s
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    # hidden states stacked per frame (0 = the CNN features after projection, i = layer i)
    feature_layers: tuple[int, ...] = tuple(range(1, 13))
    # one more row after the wav2vec2 layers: per-frame pitch, voicing, loudness (models/prosody.py)
    prosody: bool = False
    context_frames: int = 2  # m: frame t sees audio features of frames t-m..t+m
    projector_hidden: int = 512
    num_tokens: int = 32  # audio tokens per frame
    token_dim: int = 768  # audio cross-attention context dim

    @property
    def samples_per_feature(self) -> int:
        return math.prod(self.conv_stride)

    @property
    def num_feature_rows(self) -> int:
        """L in the encoder's (B, F, L, D) output: the selected layers, plus the prosody row."""
        return len(self.feature_layers) + self.num_prosody_rows

    @property
    def num_prosody_rows(self) -> int:
        return int(self.prosody)


@dataclass(frozen=True)
class SpeedConfig:
    """Head speed -> soft bucket code tanh((w - c_i) / r_i * 3) over frames t-m..t+m -> tokens."""

    bucket_centres: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
    bucket_radii: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 1.0, 1.0)
    context_frames: int = 2
    hidden: int = 256
    num_tokens: int = 1
    token_dim: int = 768

    def __post_init__(self) -> None:
        if len(self.bucket_centres) != len(self.bucket_radii):
            raise ValueError("bucket_centres and bucket_radii must have the same length")
        if any(r <= 0 for r in self.bucket_radii):
            raise ValueError("bucket_radii must be positive")


@dataclass(frozen=True)
class FaceLocatorConfig:
    """Strided convs from the face-region mask (image resolution) to latent channels."""

    channels: tuple[int, ...] = (16, 32, 96, 256)  # one stride-2 step between consecutive entries


VAE_KINDS = ("kl", "shuffle")
# The anchor (the reference's latents): "none", or "residual": they are concatenated to every frame's noisy
# latents at the Backbone's input, and the Backbone denoises the frames minus them, so what does not move
# is kept exactly
ANCHORS = ("none", "residual")


@dataclass(frozen=True)
class VAEConfig:
    """The autoencoder. `kind` "kl": diffusers' AutoencoderKL (SD's VAE shape: block_out_channels per
    level, layers_per_block resnets each, GroupNorm groups norm_num_groups). "shuffle":
    ShuffleAutoencoder (models/shuffle_autoencoder.py: encoder levels block_out_channels with
    encoder_blocks blocks each; decoder levels decoder_channels with decoder_blocks each, reaching full
    resolution by sub-pixel convolution; image_skip: the first 3 latent channels are the image
    averaged over each latent cell, and the decoder adds their bilinear upsampling)."""

    kind: str = "kl"
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2  # kl
    latent_channels: int = 4
    norm_num_groups: int = 32  # kl
    scaling_factor: float = 0.18215
    encoder_blocks: tuple[int, ...] = ()  # shuffle: one count per encoder level
    decoder_channels: tuple[int, ...] = ()  # shuffle: one width per decoder level, lowest resolution first
    decoder_blocks: tuple[int, ...] = ()  # shuffle: one count per decoder level
    image_skip: bool = False  # shuffle: the first 3 latent channels are the cell-averaged image

    def __post_init__(self) -> None:
        if self.kind not in VAE_KINDS:
            raise ValueError(f"vae.kind must be one of {', '.join(VAE_KINDS)}, got {self.kind!r}")
        levels = len(self.block_out_channels)
        if self.kind == "shuffle" and not (
                len(self.encoder_blocks) == len(self.decoder_channels) == len(self.decoder_blocks) == levels):
            raise ValueError(f"vae: a shuffle autoencoder needs {levels} encoder_blocks, decoder_channels and "
                             "decoder_blocks (one per level of block_out_channels)")

    @property
    def downsample_factor(self) -> int:
        # kl: a stride-2 step between levels; shuffle: PixelUnshuffle(2) first, then one per level
        return 2 ** (len(self.block_out_channels) - (1 if self.kind == "kl" else 0))


@dataclass(frozen=True)
class EmoConfig:
    """The whole model: parts plus the window geometry they were trained for."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    face_locator: FaceLocatorConfig = field(default_factory=FaceLocatorConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    resolution: int = 512  # square output side in pixels
    num_frames: int = 12  # f: frames per window
    num_motion_frames: int = 4  # n: previous frames given as motion context
    fps: int = 25
    anchor: str = "none"  # one of ANCHORS

    @property
    def backbone_in_channels(self) -> int:
        """The Backbone's input channels: the noisy latents, then the anchor's latents if it takes them."""
        return self.unet.in_channels * (1 if self.anchor == "none" else 2)

    def __post_init__(self) -> None:
        factor = self.vae.downsample_factor
        if self.resolution % (factor * self.unet.downsample_factor):
            raise ValueError(f"resolution {self.resolution} must be a multiple of "
                             f"{factor * self.unet.downsample_factor}")
        if 2 ** (len(self.face_locator.channels) - 1) != factor:
            raise ValueError("face_locator must downsample by the VAE's factor")
        if not self.unet.in_channels == self.unet.out_channels == self.vae.latent_channels:
            raise ValueError(f"unet in/out channels ({self.unet.in_channels}, {self.unet.out_channels}) must be "
                             f"the autoencoder's latent channels ({self.vae.latent_channels})")
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {self.anchor!r}")
        if self.num_frames + self.num_motion_frames > self.temporal.max_positions:
            raise ValueError("num_frames + num_motion_frames exceeds temporal.max_positions")

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae.downsample_factor

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "EmoConfig":
        """Strict: every key present (a model directory's config.json is written whole), none unknown;
        a problem is one WeightsError line naming `source` and the key. Keys added since older model
        directories were written are migrated explicitly (`MIGRATIONS`), never defaulted silently."""
        try:
            return parse(cls, migrate(data), require_all=True)
        except ParseError as err:
            raise WeightsError(f"{source}: {err}") from None

    def save(self, directory: str | Path) -> Path:
        from emo_rt.io.files import write_json_atomic

        return write_json_atomic(Path(directory) / "config.json", self.to_dict(), indent=2)

    @classmethod
    def load(cls, directory: str | Path) -> "EmoConfig":
        path = Path(directory) / "config.json"
        if not path.is_file():
            raise WeightsError(f"{path} not found: a model directory needs config.json")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise WeightsError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(data, str(path))


# Keys added to EmoConfig after model directories without them were shipped: (section, key, the value
# those directories were built with; section None: a top-level key). A config lacking any other key is
# refused by name.
MIGRATIONS = (
    (None, "anchor", "none"),
    ("vae", "kind", "kl"),
    ("vae", "encoder_blocks", []),
    ("vae", "decoder_channels", []),
    ("vae", "decoder_blocks", []),
    ("vae", "image_skip", False),
)


def migrate(data: dict) -> dict:
    """`data` (config.json as read) with the keys of `MIGRATIONS` it predates filled in."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()} if isinstance(data, dict) else data
    for section, key, value in MIGRATIONS:
        if section is None and isinstance(out, dict) and key not in out:
            out[key] = value
        elif isinstance(out, dict) and isinstance(out.get(section), dict) and key not in out[section]:
            out[section][key] = value
    return out


def sd15() -> EmoConfig:
    """Real scale: SD1.5 UNet, AnimateDiff v2 motion modules, wav2vec2-base, 512x512, f=12, n=4."""
    return EmoConfig()


def tiny() -> EmoConfig:
    """CPU scale: 128x128 frames -> 16x16x16 latents; reference attention at every resolution (as
    EMO: the reference is copied where the latents are finest); the sub-pixel autoencoder."""
    return EmoConfig(
        unet=UNetConfig(in_channels=16, out_channels=16, block_out_channels=(32, 64, 128),
                        attention_levels=(True, True, True), layers_per_block=1, num_attention_heads=4,
                        norm_num_groups=8),
        temporal=TemporalConfig(num_attention_heads=4, norm_num_groups=8, max_positions=24),
        audio=AudioConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=128, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=4, feature_layers=(1, 2),
                          projector_hidden=128, num_tokens=4, token_dim=64),
        speed=SpeedConfig(hidden=64, num_tokens=2, token_dim=64),  # 2: attention over 1 token ignores the query
        face_locator=FaceLocatorConfig(channels=(8, 16, 32, 64)),
        # the decoder works at 16-64 px and reaches 128 px by PixelShuffle: 0.52 GFLOP per frame, where
        # convolving at full resolution cost 1.96 (AutoencoderKL (16, 32, 64, 64)); 16 latent channels,
        # the first 3 the image averaged over each 8x8 cell (image_skip: colour passes exactly). Chosen
        # by the study in lab/ae_design (held-out round trip 34.6 dB vs 21.6 for the first model's VAE)
        vae=VAEConfig(kind="shuffle", block_out_channels=(32, 64, 128), encoder_blocks=(1, 1, 2),
                      decoder_channels=(128, 64, 32), decoder_blocks=(1, 1, 0), latent_channels=16,
                      image_skip=True, scaling_factor=1.0),
        resolution=128,
        num_frames=8,
        num_motion_frames=4,
    )


PRESETS = {"sd15": sd15, "tiny": tiny}
