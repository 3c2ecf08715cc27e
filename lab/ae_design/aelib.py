"""Shared pieces of the autoencoder design study (issue 24, item 1): the candidate autoencoders
(diffusers classes only), one encode/decode interface over both classes, the training frames,
the loss, and cost counting. Not part of the product: nothing in emo_rt imports this.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny

from emo_rt.models.shuffle_autoencoder import ShuffleAutoencoder
from torch.utils.flop_counter import FlopCounterMode

try:  # the shard reader moved from training/data to emo_rt/io while this study ran
    from emo_rt.io.shards import ShardIndex
except ImportError:
    from emo_rt.training.data.shards import ShardIndex
from emo_rt.training.recipe import LossRecipe
from emo_rt.training.stages import loss_weight_map, weighted_mean

RESOLUTION = 128
# the tiny recipe's face weighting (training/recipes/tiny.yaml `loss`): weight 1 outside the face
# box, 5 in its lower half (mouth), 3.5 in its upper half (brows)
FACE_LOSS = LossRecipe(face_weight=1.0, mouth_weight=3.0, brow_weight=1.5)


# ---- candidates --------------------------------------------------------------------------------
def kl_kwargs(block_out_channels, latent_channels, layers_per_block=1, norm_num_groups=8,
              mid_block_add_attention=True) -> dict:
    n = len(block_out_channels)
    return dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * n,
                up_block_types=["UpDecoderBlock2D"] * n, block_out_channels=list(block_out_channels),
                layers_per_block=layers_per_block, latent_channels=latent_channels,
                norm_num_groups=norm_num_groups, sample_size=RESOLUTION,
                mid_block_add_attention=mid_block_add_attention)


def tiny_kwargs(decoder_channels, num_decoder_blocks, latent_channels, encoder_channels=32,
                num_encoder_blocks=(1, 3, 3, 3)) -> dict:
    return dict(in_channels=3, out_channels=3, encoder_block_out_channels=[encoder_channels] * 4,
                decoder_block_out_channels=[decoder_channels] * 4, num_encoder_blocks=list(num_encoder_blocks),
                num_decoder_blocks=list(num_decoder_blocks), latent_channels=latent_channels)


# name -> (class name, constructor kwargs); the grid of the study (README.md says what each is)
CANDIDATES = {
    # today's shape (emo_rt tiny preset), 4 and 16 latent channels
    "kl4": ("AutoencoderKL", kl_kwargs((16, 32, 64, 64), 4)),
    "kl16": ("AutoencoderKL", kl_kwargs((16, 32, 64, 64), 16)),
    # AutoencoderKL thinned to fit the decoder budget
    "klthin16": ("AutoencoderKL", kl_kwargs((8, 16, 32, 64), 16)),
    # TAESD shapes with thin decoders
    "tiny32_3300_l16": ("AutoencoderTiny", tiny_kwargs(32, (3, 3, 0, 0), 16)),
    "tiny32_2210_l16": ("AutoencoderTiny", tiny_kwargs(32, (2, 2, 1, 0), 16)),
    "tiny24_3310_l16": ("AutoencoderTiny", tiny_kwargs(24, (3, 3, 1, 0), 16)),
    "tiny32_3300_l8": ("AutoencoderTiny", tiny_kwargs(32, (3, 3, 0, 0), 8)),
    "tiny32_3300_l12": ("AutoencoderTiny", tiny_kwargs(32, (3, 3, 0, 0), 12)),
    "tiny32_4400_l16": ("AutoencoderTiny", tiny_kwargs(32, (4, 4, 0, 0), 16)),
    "tiny32_3300_l24": ("AutoencoderTiny", tiny_kwargs(32, (3, 3, 0, 0), 24)),
    # cheaper encoder (no block at full resolution, 2 at 64 px): 0.80 instead of 1.93 GFLOP
    "tiny32_3300_l16_enc0233": ("AutoencoderTiny", tiny_kwargs(32, (3, 3, 0, 0), 16, num_encoder_blocks=(0, 2, 3, 3))),
    # round 3: sub-pixel decoders (width at low resolution, PixelShuffle to full resolution), 0.75 GFLOP
    "shuffle_111_l16": ("ShuffleAutoencoder", dict(latent_channels=16, decoder_channels=(128, 64, 32),
                                                   decoder_blocks=(1, 1, 1))),
    "shuffle_210_l16": ("ShuffleAutoencoder", dict(latent_channels=16, decoder_channels=(128, 64, 32),
                                                   decoder_blocks=(2, 1, 0))),
    "shuffle_111_l16_skip": ("ShuffleAutoencoder", dict(latent_channels=16, decoder_channels=(128, 64, 32),
                                                        decoder_blocks=(1, 1, 1), image_skip=True)),
    "shuffle_110_l16_skip": ("ShuffleAutoencoder", dict(latent_channels=16, decoder_channels=(128, 64, 32),
                                                        decoder_blocks=(1, 1, 0), image_skip=True)),
    "shuffle_111_l8": ("ShuffleAutoencoder", dict(latent_channels=8, decoder_channels=(128, 64, 32),
                                                  decoder_blocks=(1, 1, 1))),
}
CLASSES = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny, "ShuffleAutoencoder": ShuffleAutoencoder}


def build(name: str):
    cls, kwargs = CANDIDATES[name]
    return CLASSES[cls](**kwargs)


def load(model_dir: str | Path):
    """A save_pretrained directory of either class."""
    cls = json.loads((Path(model_dir) / "config.json").read_text())["_class_name"]
    return CLASSES[cls].from_pretrained(str(model_dir))


def encode(vae, images: torch.Tensor, sample_noise: torch.Tensor | None = None):
    """images (B, 3, H, W) in [-1, 1] -> (unscaled latents, KL per latent element or None). With
    `sample_noise` an AutoencoderKL's posterior is sampled (training), else its mode is taken."""
    if not isinstance(vae, AutoencoderKL):
        return vae.encode(images).latents, None
    dist = vae.encode(images).latent_dist
    z = dist.mode() if sample_noise is None else dist.mean + dist.std * sample_noise
    return z, dist.kl()


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    return vae.decode(latents).sample


# ---- data --------------------------------------------------------------------------------------
class FrameBank:
    """Every frame of the given splits of some shard folders, read lazily (memory-mapped shards),
    with each clip's face mask for the loss weighting."""

    def __init__(self, shard_dirs, splits=("train",), stride: int = 1):
        self.indexes, self.items, self.masks = [], [], []
        for d in shard_dirs:
            index = ShardIndex(d)
            self.indexes.append(index)
            for clip in index.clips:
                if clip.split not in splits:
                    continue
                m = len(self.masks)
                self.masks.append(index.read(clip, "face_mask"))
                self.items += [(len(self.indexes) - 1, clip, k, m) for k in range(0, clip.num_frames, stride)]
        self.identities = {(i, c.identity) for i, c, _, _ in self.items}

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, rng: np.random.Generator, size: int, crop: int,
              colour_aug: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(size, 3, crop, crop) images in [-1, 1] and (size, 1, crop, crop) face masks: random frames,
        random crop corners, random horizontal flips."""
        images, masks = [], []
        for j in rng.integers(0, len(self.items), size):
            i, clip, k, m = self.items[j]
            frame = self.indexes[i].read(clip, "frames", k, k + 1)[0]  # (R, R, 3) uint8
            mask = self.masks[m]
            y, x = rng.integers(0, RESOLUTION - crop + 1, 2)
            frame, mask = frame[y:y + crop, x:x + crop], mask[y:y + crop, x:x + crop]
            if rng.random() < 0.5:
                frame, mask = frame[:, ::-1], mask[:, ::-1]
            images.append(np.ascontiguousarray(frame))
            masks.append(np.ascontiguousarray(mask))
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
        m = torch.from_numpy(np.stack(masks))[:, None].float()
        return (recolour(x, rng) if colour_aug else x), m


def recolour(x: torch.Tensor, rng: np.random.Generator, negate: bool = False) -> torch.Tensor:
    """Each image's RGB channels permuted (and with `negate` each negated with probability 1/2): an
    autoencoder trained on a few hundred identities otherwise learns their palettes and shifts the
    hues of unseen ones."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        order = rng.permutation(3)
        signs = torch.from_numpy(np.where(rng.random(3) < 0.5, -1.0, 1.0)).float() if negate else torch.ones(3)
        out[i] = x[i, order] * signs[:, None, None]
    return out


# ---- loss --------------------------------------------------------------------------------------
class EvaluatorFeatures(torch.nn.Module):
    """The shipped face evaluator's conv trunk (frozen, eval mode) as a feature extractor: its
    outputs after each stride-2 stage. It is fully convolutional, so it takes crops as they are."""

    def __init__(self):
        super().__init__()
        from emo_rt.eval.evaluator import Evaluator

        trunk = Evaluator.from_pretrained().network.trunk.eval()
        for p in trunk.parameters():
            p.requires_grad_(False)
        self.trunk = trunk
        # indices of the trunk layers after which a stage ends (80 -> 40 | 20 | 10 | 5 px at full scale)
        self.taps = {0, 2, 4, 5}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.trunk):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def train(self, mode: bool = True):  # BatchNorm statistics stay the trained ones
        return super().train(False)


def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def reconstruction_loss(rec: torch.Tensor, images: torch.Tensor, mask: torch.Tensor, edge_weight: float = 0.0,
                        perceptual_weight: float = 0.0, features: EvaluatorFeatures | None = None):
    """Face-weighted L1 (+ edge_weight x face-weighted L1 of the horizontal/vertical differences)
    (+ perceptual_weight x L1 of the evaluator's trunk features). Returns (loss, stats)."""
    weight = loss_weight_map(mask, images.shape[-1], FACE_LOSS)
    l1 = weighted_mean((rec - images).abs(), weight)
    loss, stats = l1, {"l1": l1.detach()}
    if edge_weight:
        (rx, ry), (ix, iy) = gradients(rec), gradients(images)
        wx, wy = weight[..., :, 1:], weight[..., 1:, :]
        edge = 0.5 * (weighted_mean((rx - ix).abs(), wx) + weighted_mean((ry - iy).abs(), wy))
        loss = loss + edge_weight * edge
        stats["edge"] = edge.detach()
    if perceptual_weight:
        with torch.no_grad():
            target = features(images)
        perc = sum((a - b).abs().mean() for a, b in zip(features(rec), target)) / len(target)
        loss = loss + perceptual_weight * perc
        stats["perc"] = perc.detach()
    return loss, stats


# ---- cost --------------------------------------------------------------------------------------
def latent_channels(vae) -> int:
    return vae.config.latent_channels


def gflops(vae) -> tuple[float, float]:
    """(encoder, decoder) GFLOP for one 128x128 frame (torch.utils.flop_counter; a multiply-add = 2)."""
    x = torch.zeros(1, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            z, _ = encode(vae, x)
        enc = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            decode(vae, z)
        dec = counter.get_total_flops()
    return enc / 1e9, dec / 1e9


def decoder_ms(vae, batch: int = 8, repeats: int = 7) -> float:
    """Best-of-`repeats` CPU ms per frame of decoding a batch of 16x16 latents (current thread count)."""
    z = torch.randn(batch, latent_channels(vae), RESOLUTION // 8, RESOLUTION // 8)
    times = []
    with torch.no_grad():
        decode(vae, z)
        for _ in range(repeats):
            t = time.perf_counter()
            decode(vae, z)
            times.append(time.perf_counter() - t)
    return min(times) / batch * 1000
