"""What the stages read: the datasets of training/data/datasets.py, addressed by stream position,
plus each stage's random draws, and the caches of the frozen networks' outputs.

A sample is a pure function of its key (clip item, stream position): the dataset draws its frames
from (seed, epoch, item) and the stage draws noise, timestep and dropout from (seed, stage,
position). So a resumed run, or the same global batch split over any number of processes, sees
exactly the same samples.

Caches live in DATA/cache/<kind>-<hash>/ (docs/data-format.md); the hash covers the weights that
made them, their config and the index. Rank 0 writes them; `complete.json` marks a finished one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from emo_rt.digest import json_digest, tensors_digest
from emo_rt.io.files import write_json_atomic
from emo_rt.io.shards import ShardIndex
from emo_rt.models import EmoModel
from emo_rt.training.data import datasets


# ---- keys: (step, rank) -> stream positions -> (clip item, position) --------------------------
@dataclass(frozen=True)
class SampleStream:
    """The global sample order: epoch e is a permutation (seeded by (seed, e)) of the items; the
    global batch of step s is positions [s*B*W, (s+1)*B*W) and rank r takes its B-long slice."""

    num_items: int
    seed: int
    batch_size: int  # per process
    world_size: int = 1

    def positions(self, step: int, rank: int) -> range:
        start = (step * self.world_size + rank) * self.batch_size
        return range(start, start + self.batch_size)

    def item(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_items)
        return int(np.random.default_rng([self.seed, epoch]).permutation(self.num_items)[offset])

    def keys(self, step: int, rank: int) -> list[tuple[int, int]]:
        return [(self.item(p), p) for p in self.positions(step, rank)]


class BatchKeys(torch.utils.data.Sampler):
    """DataLoader batch sampler: the keys of steps start..stop-1 for one rank."""

    def __init__(self, stream: SampleStream, rank: int, start: int, stop: int):
        self.stream, self.rank, self.start, self.stop = stream, rank, start, stop

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.stream.keys(step, self.rank)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def stage_generator(seed: int, stage: int, position: int) -> torch.Generator:
    """The generator of one sample's stage draws (noise, timestep, dropout flags)."""
    (state,) = np.random.SeedSequence([seed, stage, position]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state) >> 1)


Draw = Callable[[torch.Generator], dict[str, torch.Tensor]]


class KeyedSamples(Dataset):
    """dataset[(item, position)]: item `item` of a FramePairDataset / ClipWindowDataset in epoch
    position // len, plus the stage's draws for `position`."""

    def __init__(self, base: Dataset, seed: int, stage: int, draw: Draw | None):
        self.base, self.seed, self.stage, self.draw = base, seed, stage, draw

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        item, position = key
        self.base.set_epoch(position // len(self.base))  # each DataLoader worker holds its own copy
        sample = self.base[item]
        if self.draw is not None:
            sample.update(self.draw(stage_generator(self.seed, self.stage, position)))
        return sample


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


# ---- caches ------------------------------------------------------------------------------------
def cache_dir(data_dir: str | Path, kind: str, module: torch.nn.Module, extra: dict) -> Path:
    """DATA/cache/<kind>-<hash of the module's weights, `extra` and index.json>."""
    index = (Path(data_dir) / "index.json").read_text()
    key = json_digest({"extra": extra, "weights": tensors_digest(module.state_dict()), "index": index})
    return Path(data_dir) / "cache" / f"{kind}-{key[:16]}"


def latent_cache_dir(data_dir: str | Path, model: EmoModel) -> Path:
    return cache_dir(data_dir, "latents", model.vae, {"scaling_factor": model.vae.config.scaling_factor,
                                                      "resolution": model.config.resolution})


def audio_cache_dir(data_dir: str | Path, model: EmoModel) -> Path:
    return cache_dir(data_dir, "audio", model.audio_encoder, {"fps": model.config.fps,
                                                            "prosody": model.config.audio.prosody})


def is_complete(directory: Path) -> bool:
    return (Path(directory) / "complete.json").is_file()


def write_caches(index: ShardIndex, model: EmoModel, latents: Path | None, audio: Path | None,
                 device: torch.device, progress: Callable[[int], None] = lambda n: None,
                 mark_complete: bool = True) -> None:
    """Write the latent and/or audio-feature caches of `index.clips` (datasets.write_*_cache,
    resumable per clip), then mark each complete. `progress(k)` is called with frames encoded."""
    if latents is not None and not is_complete(latents):
        def encode(images: torch.Tensor) -> torch.Tensor:
            progress(images.shape[0])
            return model.encode_images(images.to(device)).cpu()

        datasets.write_latent_cache(index, encode, latents, batch_size=32)
        if mark_complete:
            _mark_complete(latents)
    if audio is not None and not is_complete(audio):
        def encode_audio(waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
            progress(num_frames)
            return model.audio_encoder(waveform.to(device), num_frames).cpu()

        datasets.write_audio_feature_cache(index, encode_audio, audio)
        if mark_complete:
            _mark_complete(audio)


def _mark_complete(directory: Path) -> None:
    write_json_atomic(Path(directory) / "complete.json", {"complete": True}, indent=None)


# ---- a stage's samples -------------------------------------------------------------------------
PREVIEW_SAMPLES = {0: 8, 1: 4, 2: 2, 3: 2, 4: 2}


@dataclass(frozen=True)
class ShardSource:
    """One --data folder: its shards and the caches a stage reads from it (None: not used)."""

    index: ShardIndex
    latents: Path | None = None
    audio: Path | None = None


class ConcatSets(Dataset):
    """Several datasets as one, items numbered in order; set_epoch reaches each."""

    def __init__(self, parts: list[Dataset]):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.set_epoch(epoch)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        k = int(np.searchsorted(self.starts, item, side="right")) - 1
        return self.parts[k][item - int(self.starts[k])]


def stage_samples(sources: list[ShardSource], model: EmoModel, stage: int, recipe, draw: Draw,
                  context: int) -> tuple[KeyedSamples, dict]:
    """The training samples of stage `stage` over every source's train split (caches already
    written) and a fixed preview batch (from the first source's val split when it has clips, else
    from its train split)."""
    from emo_rt.training.recipe import TrainingError

    config, seed, section = model.config, recipe.seed, recipe.stage(stage)

    def make(source: ShardSource, split: str) -> Dataset:
        if stage <= 1:
            return datasets.FramePairDataset(source.index, split, seed=seed, latent_cache=source.latents)
        return datasets.ClipWindowDataset(source.index, split, config.num_frames, config.num_motion_frames, context,
                                          section.zero_motion_prob, seed=seed, latent_cache=source.latents,
                                          audio_feature_cache=source.audio)

    try:
        parts = [make(source, "train") for source in sources]
    except ValueError as err:  # no usable clips
        raise TrainingError(str(err)) from None
    train_set = parts[0] if len(parts) == 1 else ConcatSets(parts)
    try:
        preview_set = make(sources[0], "val")
    except ValueError:
        preview_set = parts[0]
    samples = KeyedSamples(train_set, seed, stage, draw)
    preview = KeyedSamples(preview_set, seed, 10 + stage, draw)
    keys = [(i % len(preview), i) for i in range(PREVIEW_SAMPLES[stage])]
    return samples, collate([preview[k] for k in keys])
