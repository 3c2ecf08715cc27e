"""The eval's image metrics against controls they must rank correctly: Fréchet distances (frame and
sequence level), sharpness, silent frames, the identity embedding's ROC AUC, and the shipped
identity embedding on identities it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from emo_rt.eval import metrics
from emo_rt.eval.distribution import SEQUENCE, FeatureSpace, distances, frechet_distance
from emo_rt.training.release.train_identity import roc_auc


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    """N(mu_a, diag(s_a^2)) vs N(mu_b, diag(s_b^2)): ||mu_a - mu_b||^2 + sum (s_a - s_b)^2."""
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (20000, 3))
    b = rng.normal([1.0, 0.0, 0.0], [1.0, 2.0, 0.5], (20000, 3))
    expected = 1.0 + (2.0 - 1.0) ** 2 + (0.5 - 1.0) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_distances_rank_a_copy_a_small_shift_and_a_large_one():
    """Per-clip features of a 'real' set: a second draw of the same process is nearer than a slightly
    shifted one, which is nearer than a far one, at frame and at sequence level."""
    rng = np.random.default_rng(1)

    def clips(shift: float, wobble: float = 1.0) -> list[np.ndarray]:
        t = np.arange(40)[:, None]
        return [np.sin(t / 5 * wobble + rng.uniform(0, 6, 16)) + shift + 0.1 * rng.normal(size=(40, 16))
                for _ in range(12)]

    real = clips(0.0)
    space = FeatureSpace(np.concatenate(real), dim=8)
    assert space.sequences(real).shape == (12 * ((40 - SEQUENCE) // 4 + 1), 16)
    same, near, far = (distances(c, real, space) for c in (clips(0.0), clips(0.3), clips(1.5)))
    assert same["fid"] < near["fid"] < far["fid"] and same["fvd"] < near["fvd"] < far["fvd"]
    # motion alone: the same frames at a different speed move the sequence distance more than the frame one
    fast = distances(clips(0.0, wobble=3.0), real, space)
    assert fast["fvd"] / same["fvd"] > fast["fid"] / same["fid"]


def _textured(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)


def test_sharpness_real_over_blurred_over_flat():
    frames = _textured(2)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    real, soft = metrics.sharpness(frames, mask), metrics.sharpness(metrics.blurred(frames), mask)
    flat = metrics.sharpness(np.full_like(frames, 128), mask)
    assert real > soft > flat == 0.0


def test_silent_frames_follow_the_audio():
    spf = 640
    audio = np.zeros(10 * spf, np.float32)
    audio[2 * spf:5 * spf] = 0.3 * np.sin(np.arange(3 * spf) / 7)  # frames 2-4 voiced
    audio[7 * spf:8 * spf] = 0.001  # frame 7: a faint hum, below 5% of the voice
    silent = metrics.silent_frames(audio, 10, spf)
    assert silent.tolist() == [True, True, False, False, False, True, True, True, True, True]


def test_roc_auc_of_separated_overlapping_and_tied_scores():
    assert roc_auc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert roc_auc(np.array([0.1, 0.2]), np.array([0.9, 0.8])) == 0.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.5
    assert roc_auc(np.array([0.9, 0.3]), np.array([0.5, 0.1])) == 0.75


def test_identity_card_names_corpora_by_their_folders_not_this_machines_paths():
    from emo_rt.training.release.train_evaluator import identity_card

    record = {"parameters": 960_000, "train_identities": 368, "train_frames": 14912, "steps": 2000, "batch": 128,
              "lr": 0.003, "train_seconds": 2052.0,
              "corpora": [["/root/runs/corpus/shards", "/root/runs/corpus/synth"],
                          ["/root/runs/corpus1/shards", "/root/runs/corpus1/synth"]]}
    figures = {"test": {"identities": 6, "frames": 504, "auc": 1.0, "same_cosine": 0.93, "different_cosine": 0.03}}
    card = identity_card({"identity": record, "identity_figures": figures})
    assert "--data corpus/shards --corpus corpus/synth" in card
    assert "--identity-data corpus1/shards corpus1/synth" in card
    assert "/root" not in card


@pytest.mark.slow
def test_shipped_identity_embedding_ranks_copy_blur_and_another_identity(small_corpus, evaluator):
    """On a corpus seed the evaluator never saw: each clip's own frames are more like its reference
    than a blurred copy of them, and the blurred copy more than another identity's real frames."""
    from emo_rt.eval.data import HeldOutData

    if evaluator.identity is None:
        pytest.fail("the shipped evaluator has no identity embedding (emo-rt train-evaluator --part identity)")
    data = HeldOutData(*small_corpus)
    clips = [data.load(e) for split in ("train", "val", "test") for e in data.index.split(split)]
    checked = 0
    for clip in clips:
        other = next((c for c in clips if c.identity != clip.identity), None)
        if other is None:
            continue
        reference = clip.frames[0]
        own = evaluator.identity.similarity(clip.frames[1:], reference).mean()
        soft = evaluator.identity.similarity(metrics.blurred(clip.frames[1:]), reference).mean()
        stranger = evaluator.identity.similarity(other.frames, reference).mean()
        assert own > soft > stranger, (clip.id, own, soft, stranger)
        checked += 1
    assert checked >= 2


def _blocks_shuffled(frames: np.ndarray, boxes: np.ndarray, block: int = 8, seed: int = 0) -> np.ndarray:
    """The frames with the 8x8 pixel blocks inside each face box shuffled: a face broken into patches
    with every colour and the identity's average kept."""
    rng = np.random.default_rng(seed)
    out = frames.copy()
    for frame, (x, y, w, h) in zip(out, boxes):
        x0, y0 = int(x) // block * block, int(y) // block * block
        cells = [(yy, xx) for yy in range(y0, min(int(y + h), frame.shape[0] - block + 1), block)
                 for xx in range(x0, min(int(x + w), frame.shape[1] - block + 1), block)]
        patches = [frame[yy:yy + block, xx:xx + block].copy() for yy, xx in cells]
        for (yy, xx), k in zip(cells, rng.permutation(len(cells))):
            frame[yy:yy + block, xx:xx + block] = patches[k]
    return out


@pytest.mark.slow
def test_face_detector_score_sees_a_broken_face_that_blur_does_not_hide(small_corpus):
    """Real synthetic faces score high, a 1.5 px blur of them barely less, and the same frames with the
    face's 8x8 blocks shuffled far lower (measured on the shipped corpus: real 0.90-0.93, blurred
    0.83-0.91, shuffled 0.05-0.41)."""
    from emo_rt.eval.data import HeldOutData
    from emo_rt.eval.face_detector import face_detector_score

    data = HeldOutData(*small_corpus)
    clips = [data.load(e) for split in ("train", "val", "test") for e in data.index.split(split)]
    real = np.mean([face_detector_score(c.frames) for c in clips])
    soft = np.mean([face_detector_score(metrics.blurred(c.frames)) for c in clips])
    broken = np.mean([face_detector_score(_blocks_shuffled(c.frames, c.face_boxes)) for c in clips])
    assert real >= 0.8, real
    assert soft >= real - 0.15, (real, soft)
    assert broken <= real - 0.4, (real, broken)
