"""Training datasets over preprocessed shards (docs/data-format.md): frame pairs for stages 0-1,
clip windows (motion frames + frames + audio + head speed) for stages 2-3; optionally reading
cached VAE latents and audio features instead of pixels and waveforms, and the helpers that write
those caches.

Every sample is a pure function of (seed, epoch, index): random choices come from
numpy.random.default_rng([seed, epoch, index]), so a resumed run sees exactly the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emo_rt.io.files import atomic_path
from emo_rt.io.shards import ClipEntry, ShardIndex


def _index(root: str | Path | ShardIndex) -> ShardIndex:
    return root if isinstance(root, ShardIndex) else ShardIndex(root)


def to_images(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., R, R, 3) -> float32 (..., 3, R, R) in [-1, 1]."""
    pixels = np.ascontiguousarray(np.moveaxis(frames, -1, -3), dtype=np.float32)  # numpy: ~20x torch's CPU speed here
    pixels *= np.float32(1 / 127.5)
    pixels -= np.float32(1)
    return torch.from_numpy(pixels)


def _mask(index: ShardIndex, clip: ClipEntry) -> torch.Tensor:
    return torch.from_numpy(index.read(clip, "face_mask").astype(np.float32))[None]  # (1, R, R)


class _CacheReader:
    """Per-clip arrays `<dir>/<clip_id>.npy`, memory-mapped (only the rows asked for are read)."""

    def __init__(self, directory: str | Path, what: str, writer: str):
        self.dir, self.what, self.writer = Path(directory), what, writer
        if not self.dir.is_dir():
            raise FileNotFoundError(f"{what} cache {self.dir} not found: write it with {writer}")

    def rows(self, clip: ClipEntry, start: int, stop: int) -> np.ndarray:
        path = self.dir / f"{clip.id}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{self.what} cache {self.dir} has no {clip.id}: rerun {self.writer}")
        return np.asarray(np.load(path, mmap_mode="r")[start:stop], np.float32)


class _ClipItems(Dataset):
    """Items over `self.clips` (`samples_per_clip` per clip; item i uses clip i % len(clips)), drawn
    from (seed, epoch, i): `set_epoch` changes the draws, not the items."""

    clips: list[ClipEntry]
    samples_per_clip: int
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips) * self.samples_per_clip

    def _clip_and_rng(self, i: int) -> tuple[ClipEntry, np.random.Generator]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.clips[i % len(self.clips)], np.random.default_rng([self.seed, self.epoch, i])


class FramePairDataset(_ClipItems):
    """Two different frames of one clip: `reference`, `target` (3, R, R) in [-1, 1] and the clip's
    `face_mask` (1, R, R); with `latent_cache`, `reference_latents` and `target_latents` (4, h, w)
    instead of the images. Item i uses clip i % num_clips (`samples_per_clip` items per clip)."""

    def __init__(self, root: str | Path | ShardIndex, split: str = "train", *, samples_per_clip: int = 1,
                 seed: int = 0, latent_cache: str | Path | None = None):
        self.index = _index(root)
        self.clips = [c for c in self.index.split(split) if c.num_frames >= 2]
        if not self.clips:
            raise ValueError(f"{self.index.root} has no clips of 2+ frames in split {split!r}")
        self.samples_per_clip, self.seed, self.epoch = samples_per_clip, seed, 0
        self.latents = _CacheReader(latent_cache, "latent", "write_latent_cache") if latent_cache else None

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        clip, rng = self._clip_and_rng(i)
        reference, target = (int(t) for t in rng.choice(clip.num_frames, 2, replace=False))
        sample = {"face_mask": _mask(self.index, clip)}
        if self.latents is not None:
            sample["reference_latents"] = torch.from_numpy(self.latents.rows(clip, reference, reference + 1)[0])
            sample["target_latents"] = torch.from_numpy(self.latents.rows(clip, target, target + 1)[0])
        else:
            sample["reference"] = to_images(self.index.read(clip, "frames", reference, reference + 1)[0])
            sample["target"] = to_images(self.index.read(clip, "frames", target, target + 1)[0])
        return sample


class ClipWindowDataset(_ClipItems):
    """Windows of n motion frames + f frames of one clip, with their audio and head speed.

    Sample: `reference` (3, R, R), another random frame of the clip; `frames` (n+f, 3, R, R), the
    first n the motion frames; `face_mask` (1, R, R); `audio` float32 ((n+f+2m) * S/F,) covering
    frames start-m .. start+n+f+m (S/F = 640 samples per frame at 16 kHz, 25 fps); `head_speed`
    (n+f+2m,); `zero_motion` bool (): True for a clip's first window without motion frames (their
    pixels, or latents, are zeros, as at render time; probability `zero_motion_prob`). Frames
    before the clip's start or past its end repeat its first or last frame (audio: that frame's
    samples), as the renderer clamps feature indices.
    With `latent_cache`: `reference_latents` (4, h, w), `frame_latents` (n+f, 4, h, w) instead of
    images; with `audio_feature_cache`: `audio_features` (n+f+2m, L, D) instead of `audio`.
    Clips without audio or shorter than n+f frames are left out."""

    def __init__(self, root: str | Path | ShardIndex, split: str, num_frames: int, num_motion_frames: int,
                 context_frames: int, zero_motion_prob: float = 0.0, *, samples_per_clip: int = 1, seed: int = 0,
                 latent_cache: str | Path | None = None, audio_feature_cache: str | Path | None = None):
        self.index = _index(root)
        self.f, self.n, self.m = num_frames, num_motion_frames, context_frames
        if self.index.sample_rate % self.index.fps:
            raise ValueError(f"sample rate {self.index.sample_rate} is not a whole number of samples per frame")
        self.samples_per_frame = self.index.sample_rate // self.index.fps
        self.clips = [c for c in self.index.split(split) if c.has_audio and c.num_frames >= self.n + self.f]
        if not self.clips:
            raise ValueError(f"{self.index.root} has no clips with audio and {self.n + self.f}+ frames "
                             f"in split {split!r}")
        if not 0.0 <= zero_motion_prob <= 1.0:
            raise ValueError(f"zero_motion_prob must be in [0, 1], got {zero_motion_prob}")
        self.zero_motion_prob = zero_motion_prob
        self.samples_per_clip, self.seed, self.epoch = samples_per_clip, seed, 0
        self.latents = _CacheReader(latent_cache, "latent", "write_latent_cache") if latent_cache else None
        self.audio_features = (_CacheReader(audio_feature_cache, "audio feature", "write_audio_feature_cache")
                               if audio_feature_cache else None)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        clip, rng = self._clip_and_rng(i)
        n, f, m, total = self.n, self.f, self.m, clip.num_frames
        zero_motion = n > 0 and rng.random() < self.zero_motion_prob
        start = -n if zero_motion else int(rng.integers(0, total - (n + f) + 1))  # first motion frame
        reference = int(rng.integers(0, total))
        lo = max(start, 0)  # frames start .. start+n+f; with zero motion the first n are zeros
        sample = {"face_mask": _mask(self.index, clip), "zero_motion": torch.tensor(zero_motion)}
        if self.latents is not None:
            sample["reference_latents"] = torch.from_numpy(self.latents.rows(clip, reference, reference + 1)[0])
            sample["frame_latents"] = _front_zeros(torch.from_numpy(self.latents.rows(clip, lo, start + n + f)), n + f)
        else:
            sample["reference"] = to_images(self.index.read(clip, "frames", reference, reference + 1)[0])
            sample["frames"] = _front_zeros(to_images(self.index.read(clip, "frames", lo, start + n + f)), n + f)
        # audio and speed of frames start-m .. start+n+f+m, indices clamped into the clip
        idx = np.clip(np.arange(start - m, start + n + f + m), 0, total - 1)
        first, last = int(idx[0]), int(idx[-1])
        if self.audio_features is not None:
            feats = self.audio_features.rows(clip, first, last + 1)
            sample["audio_features"] = torch.from_numpy(np.ascontiguousarray(feats[idx - first]))
        else:
            spf = self.samples_per_frame
            wave = self.index.read(clip, "audio", first * spf, (last + 1) * spf).reshape(-1, spf)
            sample["audio"] = torch.from_numpy(np.ascontiguousarray(wave[idx - first].reshape(-1)))
        speed = self.index.read(clip, "head_speed", first, last + 1)
        sample["head_speed"] = torch.from_numpy(np.ascontiguousarray(speed[idx - first], np.float32))
        return sample


def _front_zeros(x: torch.Tensor, length: int) -> torch.Tensor:
    """Pad (k, ...) with zero rows in front to (length, ...)."""
    if x.shape[0] == length:
        return x
    return torch.cat([x.new_zeros((length - x.shape[0], *x.shape[1:])), x])


# ---- caches written by the trainer ------------------------------------------------------------------

def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _cached_rows(path: Path) -> int | None:
    """Rows of a finished cache file, None if absent or unreadable (then it is rewritten)."""
    if not path.is_file():
        return None
    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except (ValueError, OSError):
        return None


@torch.no_grad()
def write_latent_cache(index: str | Path | ShardIndex, encode_fn: Callable[[torch.Tensor], torch.Tensor],
                       out_dir: str | Path, batch_size: int = 16) -> int:
    """Encode every clip's frames: `encode_fn(images (B, 3, R, R) in [-1, 1]) -> latents (B, 4, h, w)`
    (scaled as the trainer wants them), stored float16 as out_dir/<clip_id>.npy (N, 4, h, w).
    Finished clips are skipped (resumable); each file appears whole (written, then renamed).
    Returns the number of clips encoded now."""
    index = _index(index)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for clip in index.clips:
        path = out / f"{clip.id}.npy"
        if _cached_rows(path) == clip.num_frames:
            continue
        parts = []
        for a in range(0, clip.num_frames, batch_size):
            images = to_images(index.read(clip, "frames", a, min(a + batch_size, clip.num_frames)))
            parts.append(encode_fn(images).float().cpu().numpy().astype(np.float16))
        _save_npy(path, np.concatenate(parts))
        written += 1
    return written


@torch.no_grad()
def write_audio_feature_cache(index: str | Path | ShardIndex,
                              encode_fn: Callable[[torch.Tensor, int], torch.Tensor],
                              out_dir: str | Path) -> int:
    """Audio features of every clip with audio: `encode_fn(waveform (1, S), num_frames) -> (1, N, L, D)`,
    stored float16 as out_dir/<clip_id>.npy (N, L, D). Resumable and atomic like write_latent_cache.
    Returns the number of clips encoded now."""
    index = _index(index)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for clip in index.clips:
        path = out / f"{clip.id}.npy"
        if not clip.has_audio or _cached_rows(path) == clip.num_frames:
            continue
        waveform = torch.from_numpy(index.read(clip, "audio"))[None]  # (1, S)
        features = encode_fn(waveform, clip.num_frames)
        if features.ndim != 4 or features.shape[:2] != (1, clip.num_frames):
            raise ValueError(f"encode_fn returned {tuple(features.shape)} for {clip.id}, "
                             f"expected (1, {clip.num_frames}, L, D)")
        _save_npy(path, features[0].float().cpu().numpy().astype(np.float16))
        written += 1
    return written
