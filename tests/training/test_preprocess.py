"""`preprocess` on a synthetic corpus (ground truth in its sidecars) plus bad input: face boxes,
head speed, audio alignment, rejections with reasons, resuming after a partial and a killed run.
The tests on the corpus (10 clips x 4 s, preprocessed twice) are slow; the units are not."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from emo_rt.io.shards import ShardIndex
from emo_rt.io.video import read_video
from emo_rt.training.data.preprocess import preprocess
from emo_rt.training.data.preprocess.clip import box_mask, square_crop
from emo_rt.training.data.preprocess.decode import resample_frames
from emo_rt.training.data.preprocess.evaluate import compare_with_sidecars
from emo_rt.training.data.preprocess.sources import find_sources
from emo_rt.training.data.speed_buckets import fit_speed_buckets

NUM_CLIPS, SECONDS, SIZE, RESOLUTION = 10, 4.0, 256, 128
FIRST_PART = 3  # corpus clips in the first (partial) run


# ---- input -----------------------------------------------------------------------------------------

def write_mp4(path: Path, frames: np.ndarray | None, fps: int = 25, audio: np.ndarray | None = None,
              sample_rate: int = 16000, times_ms: np.ndarray | None = None) -> Path:
    """H.264 + AAC mp4; `times_ms` gives each frame's own time (variable frame rate)."""
    with av.open(str(path), "w", format="mp4") as container:
        if frames is not None:
            video = container.add_stream("libx264", rate=fps)
            video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            if times_ms is not None:
                video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        if audio is not None:
            stream = container.add_stream("aac", rate=sample_rate)
            stream.layout = "mono"
        if frames is not None:
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                if times_ms is not None:
                    frame.pts, frame.time_base = int(times_ms[i]), Fraction(1, 1000)
                else:
                    frame.pts = i
                container.mux(video.encode(frame))
            container.mux(video.encode())
        if audio is not None:
            for s in range(0, len(audio), 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, s:s + 1024], np.float32),
                                                   format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = sample_rate, s
                container.mux(stream.encode(chunk))
            container.mux(stream.encode())
    return path


def wav(corpus: Path, clip_id: str) -> np.ndarray:
    import soundfile as sf

    return sf.read(str(corpus / "clips" / f"{clip_id}.wav"), dtype="float32")[0]


def make_extras(corpus: Path, folder: Path) -> dict[str, str | None]:
    """Bad and odd input beside the corpus; returns file -> expected rejection reason (None: kept)."""
    folder.mkdir(parents=True)
    frames, _ = read_video(corpus / "clips" / "c00000.mp4")  # (100, 256, 256, 3)
    other, _ = read_video(corpus / "clips" / "c00001.mp4")
    audio = wav(corpus, "c00000")
    rng = np.random.default_rng(0)
    (folder / "broken.mp4").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    data = (corpus / "clips" / "c00000.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    yy, xx = np.mgrid[0:128, 0:128]
    plain = np.stack([np.stack([(xx + 3 * t) % 256, yy * 2, np.full_like(xx, 90)], -1) for t in range(40)])
    write_mp4(folder / "noface.mp4", plain.astype(np.uint8), audio=audio[:40 * 640])
    write_mp4(folder / "mute.mp4", frames[:40])
    write_mp4(folder / "audio_only.mp4", None, audio=audio)
    write_mp4(folder / "short.mp4", frames[:10], audio=audio[:10 * 640])
    write_mp4(folder / "two_faces.mp4", np.concatenate([frames[:40], other[:40]], axis=2), audio=audio[:40 * 640])
    # 30 fps: frame k at k/30 s shows the 25 fps frame at that time
    at30 = frames[(np.arange(len(frames) * 30 // 25) * 25) // 30]
    write_mp4(folder / "rate30.mp4", at30, fps=30, audio=audio)
    # variable rate: intervals of 20 and 60 ms (25 fps on average), each frame held for its interval
    times = np.cumsum([0] + [20, 60] * 40)[:80]
    write_mp4(folder / "vfr.mp4", frames[np.minimum(times // 40, len(frames) - 1)], times_ms=times, audio=audio)
    frame_folder = folder / "frames_only"
    frame_folder.mkdir()
    for t in range(20):
        cv2.imwrite(str(frame_folder / f"{t:04d}.png"), cv2.cvtColor(frames[t], cv2.COLOR_RGB2BGR))
    return {"broken.mp4": "corrupt or truncated", "truncated.mp4": "corrupt or truncated",
            "noface.mp4": "no face", "mute.mp4": "no audio", "audio_only.mp4": "no video stream",
            "short.mp4": "too short", "two_faces.mp4": "several faces", "frames_only": "no audio",
            "rate30.mp4": None, "vfr.mp4": None}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    # every test of this corpus runs preprocess's face stage; the units below need no mediapipe
    pytest.importorskip("mediapipe", reason="preprocess finds faces with mediapipe (.ci/run installs it)")
    from emo_rt.training.data.synth import generate_corpus

    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(out, NUM_CLIPS, seed=11, size=SIZE, seconds=SECONDS, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """Two runs into one OUT: first 3 corpus clips + bad input, then with the other clips added."""
    root = tmp_path_factory.mktemp("prep")
    inp, out = root / "input", root / "out"
    (inp / "clips").mkdir(parents=True)
    shutil.copy(corpus / "manifest.json", inp / "manifest.json")
    clip_ids = sorted(p.stem for p in (corpus / "clips").glob("*.mp4"))

    def add(ids):
        for clip_id in ids:
            for ext in (".mp4", ".wav", ".json"):
                shutil.copy(corpus / "clips" / f"{clip_id}{ext}", inp / "clips" / f"{clip_id}{ext}")

    add(clip_ids[:FIRST_PART])
    expected = make_extras(corpus, inp / "extra")
    first = preprocess(inp, out, resolution=RESOLUTION, workers=2, progress=False)
    first_shards = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("shard-*.safetensors")}
    add(clip_ids[FIRST_PART:])
    second = preprocess(inp, out, resolution=RESOLUTION, workers=2, progress=False)
    return {"input": inp, "out": out, "first": first, "second": second, "first_shards": first_shards,
            "expected": expected, "clip_ids": clip_ids}


# ---- end to end ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_bad_input_is_reported_and_skipped(runs):
    report = runs["second"]
    reasons = {Path(r["source"]).name: r["reason"] for r in report.rejections}
    for name, reason in runs["expected"].items():
        assert reasons.get(name) == reason, (name, reasons.get(name))
    kept = {Path(c["source"]).name for c in report.clips}
    assert kept == {f"{i}.mp4" for i in runs["clip_ids"]} | {"rate30.mp4", "vfr.mp4"}
    saved = json.loads((runs["out"] / "report.json").read_text())
    assert saved["kept_clips"] == len(kept) and saved["rejected"] == report.rejected
    assert "several faces 1" in report.summary()


@pytest.mark.slow
def test_resuming_keeps_finished_work(runs):
    first, second, out = runs["first"], runs["second"], runs["out"]
    assert first.processed == first.sources and first.resumed == 0
    assert second.resumed == first.sources  # kept and rejected sources alike are not redone
    assert second.processed == NUM_CLIPS - FIRST_PART
    for name, digest in runs["first_shards"].items():  # what the first run wrote is untouched
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    ids = [c.id for c in ShardIndex(out).clips]
    assert len(ids) == len(set(ids)) == NUM_CLIPS + 2
    assert not (out / ".work").exists()


@pytest.mark.slow
def test_face_boxes_match_the_sidecars(runs, corpus):
    result = compare_with_sidecars(runs["out"], corpus)
    print(result.summary())
    assert result.clips == NUM_CLIPS
    assert result.iou_rate >= 0.95


@pytest.mark.slow
def test_head_speed_ranks_like_the_truth(runs, corpus):
    result = compare_with_sidecars(runs["out"], corpus)
    assert result.speed_spearman >= 0.8


@pytest.mark.slow
def test_mouth_ground_truth_follows_the_shard_audio(runs, corpus):
    result = compare_with_sidecars(runs["out"], corpus)
    assert result.mouth_envelope_r >= 0.6
    assert result.mouth_envelope_r > result.mouth_envelope_r_shifted + 0.2  # and only when aligned


@pytest.mark.slow
def test_shards_follow_the_data_format(runs, corpus):
    index = ShardIndex(runs["out"])
    manifest = {row["clip_id"]: row for row in json.loads((corpus / "manifest.json").read_text())["clips"]}
    assert (index.resolution, index.fps, index.sample_rate) == (RESOLUTION, 25, 16000)
    centres, radii = index.speed_buckets["centres"], index.speed_buckets["radii"]
    assert len(centres) == len(radii) == 9 and np.all(np.diff(centres) > 0) and min(radii) > 0
    r = RESOLUTION
    for clip in index.clips:
        n = clip.num_frames
        frames, mask = index.read(clip, "frames"), index.read(clip, "face_mask")
        assert frames.dtype == np.uint8 and frames.shape == (n, r, r, 3)
        assert mask.dtype == np.uint8 and mask.shape == (r, r) and set(np.unique(mask)) == {0, 1}
        boxes = index.read(clip, "face_boxes")
        assert boxes.dtype == np.float32 and boxes.shape == (n, 4)
        assert boxes[:, :2].min() >= -1 and (boxes[:, :2] + boxes[:, 2:]).max() <= r + 1
        assert index.read(clip, "pose").shape == (n, 3) and index.read(clip, "head_speed").shape == (n,)
        audio = index.read(clip, "audio")
        assert clip.has_audio and audio.dtype == np.float32 and audio.shape == (round(n / 25 * 16000),)
        if clip.id in manifest:
            row = manifest[clip.id]
            assert (clip.split, clip.identity, n) == (row["split"], row["identity"], row["num_frames"])
    by_source = {Path(c.source).name: c for c in index.clips}
    assert by_source["rate30.mp4"].num_frames == 100  # 4 s at 30 fps -> 4 s at 25 fps
    assert abs(by_source["vfr.mp4"].num_frames - 80) <= 1  # 80 frames over 3.2 s on average


@pytest.mark.slow
def test_window_dataset_reads_the_preprocessed_shards(runs):
    from emo_rt.training.data.datasets import ClipWindowDataset

    dataset = ClipWindowDataset(runs["out"], "train", num_frames=8, num_motion_frames=4, context_frames=2)
    sample = dataset[0]
    assert sample["frames"].shape == (12, 3, RESOLUTION, RESOLUTION)
    assert sample["audio"].shape == (16 * 640,) and sample["head_speed"].shape == (16,)


@pytest.mark.slow
def test_a_killed_run_resumes_without_redoing_clips(corpus, tmp_path):
    inp, out = tmp_path / "input", tmp_path / "out"
    (inp / "clips").mkdir(parents=True)
    shutil.copy(corpus / "manifest.json", inp / "manifest.json")
    for clip_id in ("c00002", "c00003", "c00004"):
        shutil.copy(corpus / "clips" / f"{clip_id}.mp4", inp / "clips")
    code = (f"from emo_rt.training.data.preprocess import preprocess\n"
            f"preprocess({str(inp)!r}, {str(out)!r}, resolution=64, workers=1, progress=False, clips_per_shard=1)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "shard-00000.safetensors").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "the first shard never appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = sorted(p.name for p in out.glob("shard-*.safetensors"))
    assert finished and not (out / "index.json").exists()  # killed before the end

    report = preprocess(inp, out, resolution=64, workers=1, progress=False, clips_per_shard=1)
    assert report.resumed == len(finished) and report.processed == 3 - len(finished)
    ids = [c.id for c in ShardIndex(out).clips]
    assert sorted(ids) == ["c00002", "c00003", "c00004"]


@pytest.mark.slow
def test_frame_folders_without_audio(corpus, tmp_path):
    frames, _ = read_video(corpus / "clips" / "c00005.mp4")
    good, bad = tmp_path / "in" / "person_a" / "clip1", tmp_path / "in" / "person_b" / "clip1"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    for t in range(24):
        cv2.imwrite(str(good / f"{t:05d}.jpg"), cv2.cvtColor(frames[t], cv2.COLOR_RGB2BGR))
        image = frames[t] if t != 7 else frames[t][:200]  # one image of the wrong size
        cv2.imwrite(str(bad / f"{t:05d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    report = preprocess(tmp_path / "in", tmp_path / "out", resolution=64, workers=1, require_audio=False,
                        progress=False)
    assert [r["reason"] for r in report.rejections] == ["bad frames"]
    (clip,) = ShardIndex(tmp_path / "out").clips
    assert clip.identity == "person_a" and not clip.has_audio and clip.num_frames == 24


# ---- units -----------------------------------------------------------------------------------------

def _timed(times: list[float], duration: float) -> list[tuple[int, float, float]]:
    return [(i, t, duration) for i, t in enumerate(times)]


@pytest.mark.parametrize("source_fps, seconds", [(25, 2.0), (30, 2.0), (29.97, 3.0), (50, 1.0), (12, 2.0)])
def test_resample_constant_rates(source_fps, seconds):
    count = round(seconds * source_fps)
    times = [i / source_fps for i in range(count)]
    out = list(resample_frames(_timed(times, 1 / source_fps), 25))
    assert len(out) == round(count / source_fps * 25)
    # output frame k shows the last source frame starting before (k + 0.5) / 25
    for k, i in enumerate(out):
        assert times[i] < (k + 0.5) / 25 and (i + 1 == count or times[i + 1] >= (k + 0.5) / 25)


def test_resample_variable_rate_and_late_start():
    times = list(np.cumsum([0.0] + [0.02, 0.06] * 10)[:20] + 1.5)  # starts at 1.5 s
    out = list(resample_frames(_timed(times, 0.04), 25))
    assert len(out) == round((times[-1] - times[0] + 0.04) * 25)
    assert out[0] == 0 and out[-1] == 19 and all(b >= a for a, b in zip(out, out[1:]))


def test_fit_speed_buckets():
    rng = np.random.default_rng(0)
    speeds = [np.abs(rng.normal(0, s, 200)) for s in (0.05, 0.3, 1.0)] + [np.zeros(500)]
    buckets = fit_speed_buckets(speeds, num_buckets=9)
    centres, radii = np.array(buckets["centres"]), np.array(buckets["radii"])
    assert centres.shape == radii.shape == (9,)
    assert np.all(np.diff(centres) >= 0.02 - 1e-9) and np.all(radii >= 0.02)
    with pytest.raises(ValueError):
        fit_speed_buckets([], 9)


def test_square_crop_stays_inside_the_frame():
    assert square_crop(np.array([10.0, 20.0, 40.0, 50.0]), 200, 100, 1.6) == (0, 5, 80)
    assert square_crop(np.array([150.0, 0.0, 100.0, 90.0]), 256, 256, 1.6) == (96, 0, 160)
    mask = box_mask(np.array([2.0, 3.0, 4.0, 2.0]), 8)
    assert mask.sum() == 4 * 2 and mask[3, 2] == 1 and mask[2, 2] == 0


def test_find_sources_without_a_manifest(tmp_path):
    for rel in ("WDA_BarackObama_000.mp4", "WDA_BarackObama_001.mov", "RD_Radio1_000.mkv",
                "vfhq/person x/clip.1/0001.png", "vfhq/person x/clip.1/0002.png", ".hidden/a.mp4", "notes.txt"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    sources = {s.relpath: s for s in find_sources(tmp_path)}
    assert set(sources) == {"WDA_BarackObama_000.mp4", "WDA_BarackObama_001.mov", "RD_Radio1_000.mkv",
                            "vfhq/person x/clip.1"}
    assert sources["WDA_BarackObama_001.mov"].identity == "WDA_BarackObama"
    assert sources["WDA_BarackObama_000.mp4"].split == sources["WDA_BarackObama_001.mov"].split
    frames = sources["vfhq/person x/clip.1"]
    assert frames.kind == "frames" and frames.frame_files == ("0001.png", "0002.png")
    assert frames.id == "vfhq__person_x__clip_1" and frames.identity == "vfhq/person x"
    assert all("." not in s.id for s in sources.values())


@pytest.mark.slow
def test_long_sources_are_cut_into_segments_and_decoded_twice_alike(corpus):
    from emo_rt.training.data.preprocess.clip import ClipSettings, Source, process_source

    path = corpus / "clips" / "c00006.mp4"
    source = Source("c00006", str(path), "clips/c00006.mp4", "video", "id", "train")
    settings = dict(resolution=64, max_seconds=1.5)  # 100 frames -> 3 segments of at most 37
    cached = process_source(source, ClipSettings(**settings))
    decoded_twice = process_source(source, ClipSettings(**settings, keep_frames_bytes=0))
    assert [c.id for c in cached.kept] == ["c00006-000", "c00006-001", "c00006-002"]
    assert [c.start_frame for c in cached.kept] == [0, 33, 67]
    assert sum(c.num_frames for c in cached.kept) == 100 and not cached.rejected
    for a, b in zip(cached.kept, decoded_twice.kept):
        assert a.crop == b.crop and np.array_equal(a.data.frames, b.data.frames)
        assert a.data.audio.shape == (a.num_frames * 640,)
        assert np.array_equal(a.data.audio, b.data.audio)


@pytest.mark.slow
def test_finished_but_unpacked_work_is_packed_not_redone(corpus, tmp_path, monkeypatch):
    from emo_rt.training.data.preprocess import run
    from emo_rt.training.data.preprocess.clip import ClipSettings

    inp, out = tmp_path / "input", tmp_path / "out"
    (inp / "clips").mkdir(parents=True)
    for clip_id in ("c00007", "c00008"):
        shutil.copy(corpus / "clips" / f"{clip_id}.mp4", inp / "clips")
    first, second = find_sources(inp)
    run.work(first, ClipSettings(resolution=64), out)  # what a worker left when its run was killed
    calls = []
    real = run.iter_clips
    monkeypatch.setattr(run, "iter_clips", lambda source, *args: calls.append(source.id) or real(source, *args))
    report = preprocess(inp, out, resolution=64, workers=1, progress=False)
    assert calls == [second.id] and report.processed == 2
    assert sorted(c.id for c in ShardIndex(out).clips) == sorted([first.id, second.id])
