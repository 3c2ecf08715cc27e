"""Metric functions of `emo-rt eval` on constructed inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from emo_rt.eval import metrics
from emo_rt.pose import head_speed


def smooth_signal(n: int = 200, seed: int = 0) -> np.ndarray:
    return gaussian_filter1d(np.random.default_rng(seed).normal(size=n), 2.0)


def test_pearson_and_spearman_known_values_and_constants():
    x = smooth_signal()
    assert metrics.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert metrics.pearson(x, -x) == pytest.approx(-1.0)
    assert metrics.pearson(x, np.full_like(x, 0.3)) == 0.0  # a still video follows nothing
    assert metrics.spearman([0.1, 0.5, 1.0], [0.2, 0.3, 9.0]) == pytest.approx(1.0)
    assert metrics.spearman([0.1, 0.5, 1.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert metrics.spearman([0.1, 0.5, 1.0], [0.0, 0.0, 0.0]) == 0.0


@pytest.mark.parametrize("lag", [-4, -1, 0, 2, 5])
def test_best_offset_finds_a_known_shift(lag):
    truth = smooth_signal(300)
    video = np.roll(truth, lag)  # video[t + lag] = truth[t]: the video is `lag` frames late
    offset, r = metrics.best_offset([video], [truth], max_lag=5)
    assert offset == lag
    assert r > 0.99


def test_best_offset_over_clips_and_for_still_videos():
    truths = [smooth_signal(120, seed) for seed in range(3)]
    videos = [np.roll(t, 2) + 0.05 * np.random.default_rng(9).normal(size=t.size) for t in truths]
    assert metrics.best_offset(videos, truths)[0] == 2
    # still videos of different clips differ in level: no lag may look correlated
    offset_truths = [t + 3 * k for k, t in enumerate(truths)]
    stills = [np.full(120, float(k)) for k in range(3)]
    assert metrics.best_offset(stills, offset_truths) == (None, 0.0)


def frames_with_background(n: int = 6, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n frames: a fixed textured background, and a 'face' square whose brightness changes."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    frames = np.repeat(background[None], n, axis=0)
    face = np.zeros((size, size), np.uint8)
    face[8:20, 10:22] = 1
    for t in range(n):
        frames[t, 8:20, 10:22] = 40 * t
    return frames, face


def test_static_mask_excludes_the_face_and_moving_pixels():
    frames, face = frames_with_background()
    frames[:, 0, 0] = np.arange(len(frames))[:, None] * 30  # one changing background pixel
    mask = metrics.static_mask(frames, face, margin=0)
    assert not mask[face.astype(bool)].any()
    assert not mask[0, 0]
    assert mask.sum() == face.size - face.sum() - 1


def test_flicker_is_zero_for_a_still_video_and_the_step_size_otherwise():
    frames, face = frames_with_background()
    mask = metrics.static_mask(frames, face, margin=0)
    assert metrics.flicker(frames, mask) == 0.0
    assert metrics.flicker(np.repeat(frames[:1], 5, axis=0), mask) == 0.0
    flickering = frames.astype(np.int16)
    flickering[1::2][:, mask] += 10  # every other frame 10 levels brighter on the static pixels
    flickering = np.clip(flickering, 0, 255).astype(np.uint8)
    expected = np.abs(np.diff(flickering.astype(np.float32)[:, mask], axis=0)).mean()
    assert metrics.flicker(flickering, mask) == pytest.approx(expected)
    assert 9 < metrics.flicker(flickering, mask) <= 10


def test_ssim_and_psnr_of_identical_and_changed_frames():
    frames, face = frames_with_background()
    reference = frames[0]
    assert metrics.ssim(frames[:1], reference)[0] == pytest.approx(1.0)
    assert metrics.psnr(frames[:1], reference)[0] == metrics.PSNR_CAP_DB
    # the face changes from frame to frame; the background never does
    background = ~face.astype(bool)
    assert np.all(metrics.psnr(frames, reference, background) == metrics.PSNR_CAP_DB)
    assert np.all(np.diff(metrics.ssim(frames, reference, face)) < 0)  # further from the reference each frame
    shifted = np.clip(reference.astype(np.int16) + 5, 0, 255).astype(np.uint8)
    mse = ((shifted.astype(float) - reference) ** 2).mean()
    assert metrics.psnr(shifted[None], reference)[0] == pytest.approx(10 * np.log10(255 ** 2 / mse))


def test_head_speed_of_a_constant_turn():
    pose = np.zeros((60, 3))
    pose[:, 0] = 0.5 * np.arange(60)  # yaw 0.5 deg/frame
    pose[:, 2] = -0.3 * np.arange(60)  # roll -0.3 deg/frame
    speed = head_speed(pose, smooth=2.0)  # as eval reads it: smoothed first
    assert np.median(speed) == pytest.approx(np.hypot(0.5, 0.3), rel=1e-3)
    assert np.all(head_speed(np.ones((30, 3)), smooth=2.0) == 0)
    raw = head_speed(pose)  # as the corpus and preprocessing define it: frame 0 copies frame 1
    np.testing.assert_allclose(raw, np.hypot(0.5, 0.3))


def test_slope_of_a_line_and_of_nothing():
    assert metrics.slope([0.1, 0.5, 1.0], [0.3, 1.1, 2.1]) == pytest.approx(2.0)
    assert metrics.slope([0.5, 0.5], [1.0, 2.0]) == 0.0


def test_drift_is_the_relative_loss():
    assert metrics.drift(0.8, 0.76) == pytest.approx(0.05)
    assert metrics.drift(0.8, 0.8) == 0.0


def test_render_drift_weighs_a_tenth_of_the_render_not_one_window():
    """One window that differs at the start (an open mouth) is not drift; a steady slide away from
    the reference is."""
    from emo_rt.eval.runner import _drift

    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    video = np.repeat(reference[None], 400, axis=0)
    noisy = np.clip(reference + rng.normal(0, 40, (8, 32, 32, 3)), 0, 255).astype(np.uint8)
    window = metrics.ssim(noisy, reference).mean()  # well below 1: one window's own figure
    steady = _drift(np.concatenate([noisy, video[8:]]), reference, window=8, fps=25)
    assert steady["span"] == 40 and steady["last"] == pytest.approx(1.0)
    assert steady["first"] == pytest.approx((32 + 8 * window) / 40)  # the window is diluted in the span
    assert abs(steady["drift"]) < abs(metrics.drift(window, 1.0)) / 4
    fading = np.stack([np.clip(reference + rng.normal(0, 0.2 * i, reference.shape), 0, 255).astype(np.uint8)
                       for i in range(400)])
    assert _drift(fading, reference, window=8, fps=25)["drift"] > 0.2
    assert _drift(video[:16], reference, window=8, fps=25)["span"] == 8  # at least one window


def test_default_speeds_come_from_the_data_then_the_model():
    from emo_rt.config import tiny
    from emo_rt.eval.runner import default_speeds

    config = tiny()
    data = {"centres": [0.3, 0.07, 0.5, 0.95], "radii": [0.1] * 4}
    assert default_speeds(config, data) == (0.07, 0.5, 0.95)  # the range the corpus's clips have
    centres = sorted(config.speed.bucket_centres)
    assert default_speeds(config, {}) == (centres[0], centres[len(centres) // 2], centres[-1])
