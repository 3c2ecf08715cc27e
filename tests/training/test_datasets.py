"""Training datasets over shards written by ShardWriter: documented shapes, dtypes and ranges, the
right frames / audio / speeds per window, determinism (seed, epoch, index), and the caches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emo_rt.io.shards import ClipData, ShardIndex, ShardWriter
from emo_rt.training.data.datasets import (
    ClipWindowDataset,
    FramePairDataset,
    write_audio_feature_cache,
    write_latent_cache,
)

R, SPF = 32, 640  # resolution, audio samples per frame (16 kHz / 25 fps)
N_MOTION, N_FRAMES, CONTEXT = 4, 8, 2
CLIPS = {"a": 30, "b": 21, "c": 11, "d": 40}  # frames; "c" is shorter than n + f; "d" has no audio


def make_clip(index: int, num_frames: int, audio: bool) -> ClipData:
    """Frame t of clip k: red = t, green = k (so a sample says which frames it holds); the audio of
    frame t is the value t; head speed of frame t is t / 10."""
    frames = np.zeros((num_frames, R, R, 3), np.uint8)
    frames[..., 0] = np.arange(num_frames)[:, None, None]
    frames[..., 1] = index
    frames[..., 2] = np.arange(R)[None, None, :] * 4  # some spatial variation
    mask = np.zeros((R, R), np.uint8)
    mask[8:24, 10:22] = 1
    return ClipData(frames=frames, face_mask=mask,
                    face_boxes=np.tile(np.float32([10, 8, 12, 16]), (num_frames, 1)),
                    pose=np.zeros((num_frames, 3), np.float32),
                    head_speed=np.arange(num_frames, dtype=np.float32) / 10,
                    audio=np.repeat(np.arange(num_frames, dtype=np.float32), SPF) if audio else None)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    writer = ShardWriter(out, resolution=R, clips_per_shard=2)
    for k, (clip_id, n) in enumerate(CLIPS.items()):
        writer.add(clip_id, make_clip(k, n, audio=clip_id != "d"), split="train", identity=f"id{k}",
                   source=f"{clip_id}.mp4")
    writer.add("v", make_clip(9, 25, audio=True), split="val", identity="id9", source="v.mp4")
    writer.close({"centres": [0.0, 1.0], "radii": [1.0, 1.0]})
    return out


def frame_ids(images: torch.Tensor) -> np.ndarray:
    """(..., 3, R, R) in [-1, 1] -> the frame numbers in the red channel."""
    return np.rint((images[..., 0, 0, 0].numpy() + 1) * 127.5).astype(int)


def windows(root, **kwargs):
    return ClipWindowDataset(root, "train", N_FRAMES, N_MOTION, CONTEXT, **kwargs)


# ---- frame pairs -------------------------------------------------------------------------------

def test_frame_pairs_shapes_ranges_and_frames(root):
    dataset = FramePairDataset(root, "train", samples_per_clip=3)
    assert len(dataset) == 4 * 3
    for i in range(len(dataset)):
        sample = dataset[i]
        assert set(sample) == {"reference", "target", "face_mask"}
        for name in ("reference", "target"):
            x = sample[name]
            assert x.shape == (3, R, R) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
        assert sample["face_mask"].shape == (1, R, R) and sample["face_mask"].sum() == 16 * 12
        ref, tgt = frame_ids(sample["reference"]), frame_ids(sample["target"])
        assert ref != tgt  # two different frames
        clip = list(CLIPS.values())[i % 4]
        assert 0 <= ref < clip and 0 <= tgt < clip


def test_frame_pairs_are_deterministic(root):
    a, b = FramePairDataset(root, "train", seed=3), FramePairDataset(ShardIndex(root), "train", seed=3)
    for i in range(len(a)):
        assert all(torch.equal(a[i][k], b[i][k]) for k in a[i])
    pairs = lambda d: [(int(frame_ids(d[i]["reference"])), int(frame_ids(d[i]["target"]))) for i in range(len(d))]
    first = pairs(a)
    a.set_epoch(1)
    assert pairs(a) != first  # a new epoch, new pairs
    a.set_epoch(0)
    assert pairs(a) == first
    assert pairs(FramePairDataset(root, "train", seed=4)) != first


# ---- clip windows ------------------------------------------------------------------------------

def test_windows_hold_consecutive_frames_with_aligned_audio_and_speed(root):
    dataset = windows(root, samples_per_clip=8)
    assert len(dataset.clips) == 2  # "c" is too short, "d" has no audio
    lengths = {clip.id: clip.num_frames for clip in dataset.clips}
    total = N_MOTION + N_FRAMES + 2 * CONTEXT
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample["frames"].shape == (N_MOTION + N_FRAMES, 3, R, R) and sample["frames"].dtype == torch.float32
        assert sample["reference"].shape == (3, R, R) and sample["face_mask"].shape == (1, R, R)
        assert sample["audio"].shape == (total * SPF,) and sample["audio"].dtype == torch.float32
        assert sample["head_speed"].shape == (total,) and not sample["zero_motion"]
        ids = frame_ids(sample["frames"])
        start = ids[0]
        assert np.array_equal(ids, np.arange(start, start + N_MOTION + N_FRAMES))
        n = lengths[dataset.clips[i % 2].id]
        assert start + N_MOTION + N_FRAMES <= n
        expected = np.clip(np.arange(start - CONTEXT, start + N_MOTION + N_FRAMES + CONTEXT), 0, n - 1)
        assert np.array_equal(sample["audio"].numpy().reshape(total, SPF)[:, 0], expected)
        assert np.allclose(sample["head_speed"].numpy(), expected / 10)


def test_first_windows_without_motion_frames(root):
    never, always = windows(root, zero_motion_prob=0.0), windows(root, zero_motion_prob=1.0)
    assert not any(bool(never[i]["zero_motion"]) for i in range(len(never)))
    sample = always[0]
    assert bool(sample["zero_motion"])
    assert torch.count_nonzero(sample["frames"][:N_MOTION]) == 0  # as at render time
    assert np.array_equal(frame_ids(sample["frames"][N_MOTION:]), np.arange(N_FRAMES))
    expected = np.clip(np.arange(-N_MOTION - CONTEXT, N_FRAMES + CONTEXT), 0, None)
    assert np.array_equal(sample["audio"].numpy().reshape(-1, SPF)[:, 0], expected)
    some = windows(root, zero_motion_prob=0.3, samples_per_clip=50)
    share = np.mean([bool(some[i]["zero_motion"]) for i in range(len(some))])
    assert 0.15 < share < 0.45


def test_windows_are_deterministic_through_a_dataloader(root):
    dataset = windows(root, zero_motion_prob=0.2, samples_per_clip=4, seed=7)
    direct = [dataset[i] for i in range(len(dataset))]
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)
    batched = [b for batch in loader for b in
               [{k: v[j] for k, v in batch.items()} for j in range(len(batch["frames"]))]]
    assert len(batched) == len(direct)
    for a, b in zip(direct, batched):
        assert all(torch.equal(a[k], b[k]) for k in a)
    again = windows(root, zero_motion_prob=0.2, samples_per_clip=4, seed=7)
    assert all(torch.equal(again[5][k], direct[5][k]) for k in direct[5])
    dataset.set_epoch(1)
    assert any(not torch.equal(dataset[i]["frames"], direct[i]["frames"]) for i in range(len(dataset)))


def test_datasets_say_what_is_missing(root, tmp_path):
    with pytest.raises(ValueError, match="split 'test'"):
        FramePairDataset(root, "test")
    with pytest.raises(FileNotFoundError, match="write_latent_cache"):
        FramePairDataset(root, "train", latent_cache=tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="index.json"):
        windows(tmp_path)


# ---- caches ------------------------------------------------------------------------------------

def encode_images(images: torch.Tensor) -> torch.Tensor:
    """A stand-in VAE: (B, 3, R, R) -> (B, 4, R/8, R/8)."""
    pooled = F.avg_pool2d(images, 8)
    return torch.cat([pooled, pooled[:, :1] * 2], dim=1)


def encode_audio(waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
    """A stand-in audio encoder: (1, S) -> (1, N, L=2, D=3), frame t's features all equal to its samples' mean."""
    means = waveform[0, : num_frames * SPF].reshape(num_frames, SPF).mean(dim=1)
    return means[None, :, None, None].expand(1, num_frames, 2, 3)


def test_latent_cache_is_written_once_and_read_by_both_datasets(root, tmp_path):
    cache = tmp_path / "latents"
    assert write_latent_cache(root, encode_images, cache, batch_size=7) == len(CLIPS) + 1
    files = {p.stem: p for p in cache.glob("*.npy")}
    assert set(files) == set(CLIPS) | {"v"} and not list(cache.glob(".*.part*"))
    stored = np.load(files["a"])
    assert stored.dtype == np.float16 and stored.shape == (CLIPS["a"], 4, R // 8, R // 8)
    stamps = {k: p.stat().st_mtime_ns for k, p in files.items()}
    files["b"].write_bytes(b"cut short")  # a broken file is rewritten, finished ones are kept
    assert write_latent_cache(root, encode_images, cache) == 1
    assert all(files[k].stat().st_mtime_ns == stamps[k] for k in stamps if k != "b")

    index = ShardIndex(root)
    pairs = FramePairDataset(root, "train", latent_cache=cache)
    sample = pairs[0]
    assert set(sample) == {"reference_latents", "target_latents", "face_mask"}
    assert sample["target_latents"].shape == (4, R // 8, R // 8) and sample["target_latents"].dtype == torch.float32
    window = windows(root, latent_cache=cache)[1]
    assert window["frame_latents"].shape == (N_MOTION + N_FRAMES, 4, R // 8, R // 8) and "frames" not in window
    # the latents are those of the window's frames
    plain = windows(root)[1]
    clip = index.clips[[c.id for c in index.clips].index(windows(root).clips[1].id)]
    start = frame_ids(plain["frames"])[0]
    from emo_rt.training.data.datasets import to_images
    expected = encode_images(to_images(index.read(clip, "frames", start, start + N_MOTION + N_FRAMES)))
    assert torch.allclose(window["frame_latents"], expected, atol=1e-2)
    first = windows(root, latent_cache=cache, zero_motion_prob=1.0)[0]
    assert torch.count_nonzero(first["frame_latents"][:N_MOTION]) == 0


def test_audio_feature_cache_windows(root, tmp_path):
    cache = tmp_path / "audio"
    assert write_audio_feature_cache(root, encode_audio, cache) == len(CLIPS)  # "d" has no audio
    assert write_audio_feature_cache(root, encode_audio, cache) == 0
    dataset = windows(root, audio_feature_cache=cache, samples_per_clip=3)
    total = N_MOTION + N_FRAMES + 2 * CONTEXT
    for i in range(len(dataset)):
        sample = dataset[i]
        assert "audio" not in sample and sample["audio_features"].shape == (total, 2, 3)
        start = frame_ids(sample["frames"])[0]
        n = dataset.clips[i % 2].num_frames
        expected = np.clip(np.arange(start - CONTEXT, start + N_MOTION + N_FRAMES + CONTEXT), 0, n - 1)
        assert np.allclose(sample["audio_features"][:, 0, 0].numpy(), expected)
    with pytest.raises(ValueError, match=r"expected \(1, 30, L, D\)"):
        write_audio_feature_cache(root, lambda w, n: torch.zeros(1, n + 1, 2, 3), tmp_path / "bad")


def test_loader_workers_stay_quiet_only_about_the_trainer_being_gone(monkeypatch):
    """The worker hook drops the broken pipe of a trainer that stopped mid-batch and reports any other
    error through the hook that was there before."""
    import sys

    from emo_rt.training.data.workers import quiet_when_the_trainer_is_gone

    reported = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, trace: reported.append(kind))
    quiet_when_the_trainer_is_gone(0)
    for error in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset"), ValueError("bad shard")):
        sys.excepthook(type(error), error, None)
    assert reported == [ValueError]
