"""The synthetic talking-head corpus (emo_rt.training.data.synth): layout, determinism, disjoint
splits, audio/video agreement, audio-driven mouth and brows, head speed, detectability."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile as sf

from emo_rt.errors import EmoError
from emo_rt.training.data.synth import generate_corpus, plan_corpus
from emo_rt.training.data.synth import speech as speech_mod
from emo_rt.training.data.synth.corpus import SAMPLES_PER_FRAME
from emo_rt.training.data.synth.face import Expression, FaceRenderer, Pose
from emo_rt.training.data.synth.identity import Identity
from emo_rt.training.data.synth.motion import audio_features, head_pose, head_speed

FRAME_KEYS = ("face_box", "mouth_open", "mouth_width", "brow_raise", "blink", "yaw", "pitch", "roll", "head_speed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """12 clips of 2-3 s at 256x256, two worker processes."""
    out = tmp_path_factory.mktemp("synth")
    generate_corpus(out, num_clips=12, seed=7, size=256, seconds=(2.0, 3.0), workers=2, progress=False)
    return out


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _sidecars(root: Path) -> list[dict]:
    return [json.loads((root / c["sidecar"]).read_text()) for c in _manifest(root)["clips"]]


def _frame_rms(root: Path, clip: dict) -> np.ndarray:
    wave, rate = sf.read(root / clip["audio"], dtype="float32")
    assert rate == 16000 and wave.ndim == 1
    return np.sqrt(np.mean(wave.reshape(-1, SAMPLES_PER_FRAME).astype(np.float64) ** 2, axis=1))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_layout_and_sidecar_schema(corpus):
    manifest = _manifest(corpus)
    assert manifest["generator"]["num_clips"] == len(manifest["clips"]) == 12
    for clip, side in zip(manifest["clips"], _sidecars(corpus)):
        for key in ("video", "audio", "sidecar"):
            assert (corpus / clip[key]).is_file()
        assert side["clip_id"] == clip["clip_id"]
        for key in ("identity", "voice", "sentence"):
            assert side[key] == clip[key]
        assert side["fps"] == 25 and side["size"] == [256, 256] and side["sample_rate"] == 16000
        assert 0 <= side["speed_level"] < 1
        n = side["num_frames"]
        assert set(side["frames"]) == set(FRAME_KEYS)
        for key in FRAME_KEYS:
            assert len(side["frames"][key]) == n, key
        boxes = np.array(side["frames"]["face_box"])
        assert boxes.shape == (n, 4) and (boxes[:, 2:] > 60).all() and (boxes[:, :2] >= 0).all()
        for key in ("mouth_open", "brow_raise", "blink"):
            v = np.array(side["frames"][key])
            assert v.min() >= 0 and v.max() <= 1, key
    assert not list(corpus.rglob(".*.part*"))


def test_frame_count_is_25_per_second_of_audio(corpus):
    """num_frames = round(seconds * 25) and the wav has exactly num_frames * 640 samples."""
    for clip, side in zip(_manifest(corpus)["clips"], _sidecars(corpus)):
        info = sf.info(corpus / clip["audio"])
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "FLOAT"
        assert info.frames == side["num_samples"] == side["num_frames"] * SAMPLES_PER_FRAME
        assert side["num_frames"] == round(info.frames / 16000 * 25)
        assert 2.0 * 25 <= side["num_frames"] <= 3.0 * 25


def test_splits_disjoint_in_identity_voice_and_sentence(corpus):
    manifest = _manifest(corpus)
    clips = {c["clip_id"]: c for c in manifest["clips"]}
    splits = manifest["splits"]
    assert sorted(sum(splits.values(), [])) == sorted(clips)
    assert all(splits[s] for s in ("train", "val", "test"))
    for key in ("identity", "voice", "sentence"):
        used = {s: {clips[c][key] for c in ids} for s, ids in splits.items()}
        assert not used["train"] & used["val"], key
        assert not used["train"] & used["test"], key
        assert not used["val"] & used["test"], key
    # identities recur within a split (a reference frame of the same person in another clip)
    train_ids = [clips[c]["identity"] for c in splits["train"]]
    assert len(set(train_ids)) < len(train_ids)


def test_mp4_has_h264_video_and_aac_audio(corpus):
    for clip, side in list(zip(_manifest(corpus)["clips"], _sidecars(corpus)))[:4]:
        with av.open(str(corpus / clip["video"])) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264" and (video.width, video.height) == (256, 256)
            assert video.average_rate == 25
            assert audio.codec_context.name == "aac" and audio.rate == 16000 and audio.channels == 1
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == side["num_frames"]
        with av.open(str(corpus / clip["video"])) as container:
            samples = sum(f.samples for f in container.decode(audio=0))
        assert abs(samples - side["num_samples"]) < 2048 + 1024   # AAC priming / last-frame padding
        # the decoded picture is the drawn one: the face box is much brighter/varied than flat noise
        x, y, w, h = (int(v) for v in side["frames"]["face_box"][0])
        assert frames[0][y:y + h, x:x + w].std() > 10


def test_same_seed_same_bytes_any_worker_count(tmp_path):
    kwargs = dict(num_clips=3, size=128, seconds=1.2, progress=False)
    generate_corpus(tmp_path / "a", seed=11, workers=2, **kwargs)
    generate_corpus(tmp_path / "b", seed=11, workers=1, **kwargs)
    generate_corpus(tmp_path / "c", seed=12, workers=1, **kwargs)
    a, b, c = (_files(tmp_path / d) for d in "abc")
    assert a.keys() == b.keys() and len(a) == 3 * 3 + 1
    for name in a:
        assert a[name] == b[name], name          # json, wav and mp4 alike
    for name in a:
        if name.endswith((".json", ".wav")):
            assert a[name] != c[name], name


def test_rerun_keeps_finished_clips_and_redoes_missing_ones(tmp_path):
    kwargs = dict(num_clips=3, seed=5, size=128, seconds=1.0, workers=1, progress=False)
    generate_corpus(tmp_path, **kwargs)
    before = _files(tmp_path)
    clips = tmp_path / "clips"
    (clips / "c00001.mp4").unlink()                             # as if killed mid-clip
    (clips / ".c00001.k2j4x.part.mp4").write_bytes(b"half a file")  # as atomic_path names them
    kept = (clips / "c00000.mp4").stat().st_mtime_ns
    generate_corpus(tmp_path, **kwargs)
    assert _files(tmp_path) == before
    assert (clips / "c00000.mp4").stat().st_mtime_ns == kept
    assert not list(clips.glob(".*.part*"))


def test_mouth_follows_the_speech_envelope(corpus):
    """mouth_open vs frame RMS: correlated, shut in silence, opening before a sound's onset."""
    rs, silent_max, early = [], [], []
    for clip, side in zip(_manifest(corpus)["clips"], _sidecars(corpus)):
        rms = _frame_rms(corpus, clip)
        mouth = np.array(side["frames"]["mouth_open"])
        rs.append(np.corrcoef(mouth, rms)[0, 1])
        level = np.percentile(rms[rms > 0.05 * rms.max()], 90)
        quiet = rms < 0.02 * level
        # silent frames with 2 silent frames after them (the mouth may open up to 2 frames early)
        quiet_ahead = quiet & np.append(quiet[1:], True) & np.append(quiet[2:], [True, True])
        silent_max.append(mouth[quiet_ahead].max(initial=0.0))
        onsets = [t for t in range(3, len(rms)) if rms[t] > 0.2 * level and quiet[t - 3:t].all()]
        early += [mouth[t - 1] for t in onsets]
    assert min(rs) > 0.6, rs
    assert np.mean(rs) > 0.8, rs
    assert max(silent_max) < 0.05, silent_max
    assert early and np.mean(np.array(early) > 0.05) > 0.8, early


def test_lip_width_follows_the_spectral_centroid(corpus):
    """Bright sounds spread the lips, dark ones round them: width vs log centroid in open frames."""
    rs = []
    for clip, side in zip(_manifest(corpus)["clips"], _sidecars(corpus)):
        wave, _ = sf.read(corpus / clip["audio"], dtype="float32")
        frames = wave.reshape(-1, SAMPLES_PER_FRAME).astype(np.float64) * np.hanning(SAMPLES_PER_FRAME)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        freqs = np.fft.rfftfreq(SAMPLES_PER_FRAME, 1 / 16000)
        band = (freqs > 80) & (freqs < 5000)
        centroid = power[:, band] @ freqs[band] / power[:, band].sum(1)
        mouth = np.array(side["frames"]["mouth_open"])
        width = np.array(side["frames"]["mouth_width"])
        open_ = mouth > 0.4
        if open_.sum() >= 8:
            rs.append(np.corrcoef(width[open_], np.log(centroid[open_]))[0, 1])
    assert len(rs) >= 6 and np.median(rs) > 0.5, rs


def test_brows_rise_on_pitch_peaks(corpus):
    high, rest = [], []
    for clip, side in zip(_manifest(corpus)["clips"], _sidecars(corpus)):
        wave, _ = sf.read(corpus / clip["audio"], dtype="float32")
        f0 = audio_features(wave, 16000, 25).f0
        brow = np.array(side["frames"]["brow_raise"])
        voiced = f0 > 0
        if voiced.sum() < 10:
            continue
        peak = voiced & (f0 >= np.percentile(f0[voiced], 85))
        high += list(brow[peak])
        rest += list(brow[voiced & ~peak])
    assert np.mean(high) > np.mean(rest) + 0.15, (np.mean(high), np.mean(rest))


def test_head_speed_grows_with_speed_level(corpus):
    # the generator itself, many clips per level
    levels = np.linspace(0, 1, 6)
    speeds = []
    for level in levels:
        runs = [head_speed(head_pose(np.random.default_rng(k), 125, level, 25)[0]).mean() for k in range(20)]
        speeds.append(np.mean(runs))
    assert np.all(np.diff(speeds) > 0), speeds
    assert speeds[-1] > 10 * speeds[0], speeds
    # and the corpus: rank correlation of speed level and measured mean head speed
    sides = _sidecars(corpus)
    level = np.array([s["speed_level"] for s in sides])
    measured = np.array([np.mean(s["frames"]["head_speed"]) for s in sides])
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(level), rank(measured))[0, 1] > 0.8
    # head_speed is the norm of the pose change between consecutive frames
    side = sides[0]
    pose = np.stack([side["frames"][k] for k in ("yaw", "pitch", "roll")], 1)
    np.testing.assert_allclose(side["frames"]["head_speed"][1:], np.linalg.norm(np.diff(pose, axis=0), axis=1),
                               atol=2e-3)


def test_mediapipe_finds_the_face_inside_the_sidecar_box(corpus):
    mp = pytest.importorskip("mediapipe")
    detector = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)
    found, ious, identities = 0, [], set()
    total = 0
    for clip, side in zip(_manifest(corpus)["clips"], _sidecars(corpus)):
        identities.add(side["identity"])
        n = side["num_frames"]
        wanted = {0, n // 2, n - 1}
        with av.open(str(corpus / clip["video"])) as container:
            frames = [(t, f.to_ndarray(format="rgb24")) for t, f in enumerate(container.decode(video=0)) if t in wanted]
        for t, rgb in frames:
            total += 1
            result = detector.process(rgb)
            if not result.detections:
                continue
            found += 1
            bb = result.detections[0].location_data.relative_bounding_box
            det = (bb.xmin * 256, bb.ymin * 256, bb.width * 256, bb.height * 256)
            ious.append(_iou(det, side["frames"]["face_box"][t]))
    detector.close()
    assert len(identities) >= 5
    assert found / total >= 0.95, (found, total)
    assert min(ious) >= 0.6 and np.median(ious) >= 0.7, sorted(ious)[:5]


def test_mouth_opening_is_obvious_at_128px():
    """Fully open vs closed mouth, frames downscaled to 128x128: a clearly different region."""
    for k in range(4):
        renderer = FaceRenderer(Identity.sample(np.random.default_rng(k), "x"), 256)
        closed, _ = renderer.render(Pose(), Expression(mouth_open=0.0))
        opened, _ = renderer.render(Pose(), Expression(mouth_open=1.0))
        small = [cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA).astype(np.int16) for f in (closed, opened)]
        changed = (np.abs(small[1] - small[0]).max(-1) > 40).sum()
        assert changed >= 60, changed                     # pixels of a 128x128 frame


def test_fallback_synthesiser_is_loud_and_speechlike(monkeypatch):
    monkeypatch.setattr(speech_mod, "espeak_version", lambda: None)
    monkeypatch.setattr(speech_mod, "_warned", False)
    sentence = speech_mod.Sentence("s", "english", ("the quiet engineer", "found seven lanterns"), (500,), (1,))
    voice = speech_mod.Voice.sample(np.random.default_rng(0), "v")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wave = speech_mod.synthesize(sentence, voice, 150, seed=0)
    assert any("espeak-ng not found" in str(w.message) for w in caught)
    assert speech_mod.speech_engine() == "fallback"
    assert wave.dtype == np.float32 and 0.5 * 16000 < len(wave) < 15 * 16000
    rms = np.sqrt(np.mean(wave[: len(wave) // 640 * 640].reshape(-1, 640) ** 2, axis=1))
    assert (rms > 0.05 * rms.max()).mean() > 0.3          # mostly sound ...
    assert (rms < 0.01 * rms.max()).sum() >= 10           # ... and the 500 ms pause


def test_corpus_without_espeak_uses_the_fallback_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(speech_mod, "espeak_version", lambda: None)
    monkeypatch.setattr(speech_mod, "_warned", False)
    with pytest.warns(RuntimeWarning, match="espeak-ng not found"):
        generate_corpus(tmp_path, num_clips=2, seed=3, size=128, seconds=2.0, workers=1, progress=False)
    assert _manifest(tmp_path)["generator"]["speech_engine"] == "fallback"
    for clip, side in zip(_manifest(tmp_path)["clips"], _sidecars(tmp_path)):
        assert side["speech_engine"] == "fallback"
        assert np.corrcoef(side["frames"]["mouth_open"], _frame_rms(tmp_path, clip))[0, 1] > 0.6


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(EmoError, match="at least one clip"):
        plan_corpus(0, seed=0)
    with pytest.raises(EmoError, match="even frame size"):
        plan_corpus(2, seed=0, size=255)
    with pytest.raises(EmoError, match="seconds"):
        plan_corpus(2, seed=0, seconds=(3.0, 1.0))
