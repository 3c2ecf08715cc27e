"""The synthetic corpus: plan the clips (identity, voice and sentence pools per split, disjoint across
splits), render them in parallel processes, write the manifest. Entry point: `generate_corpus`.

Layout: OUT/clips/<clip_id>.{mp4,wav,json} and OUT/manifest.json. A clip has
num_frames = round(seconds * 25) frames and exactly num_frames * 640 audio samples at 16 kHz: frame t
shows samples [640 t, 640 (t + 1)). Everything derives from the seed (numpy SeedSequence streams
keyed by purpose and index), so the same seed gives the same bytes whatever the worker count.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo_rt.errors import EmoError
from emo_rt.io.files import remove_partials, write_bytes_atomic
from emo_rt.runtime.progress import progress_bar

from ..workers import one_thread_per_worker, stop_workers
from .face import FaceRenderer
from .identity import Identity, rounded
from .media import Mp4Writer
from .motion import face_motion
from .speech import (
    SAMPLE_RATE,
    Sentence,
    Voice,
    place_in_clip,
    speech_engine,
    synthesize,
    warn_if_fallback,
    wav_bytes,
)

FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS    # 640
GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")

# seed streams
_PLAN, _IDENTITY, _VOICE, _SENTENCE, _CLIP = range(5)


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, index)))


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip's files."""

    clip_id: str
    index: int
    split: str
    identity: Identity
    voice: Voice
    sentence: Sentence
    num_frames: int
    speed_level: float      # 0 near-still .. 1 lively
    size: int
    seed: int               # the corpus seed
    engine: str             # speech engine ("espeak-ng 1.51" or "fallback")

    def key(self) -> str:
        """Hash of the spec, stored in the sidecar: a finished clip with the same key is not redone."""
        blob = json.dumps([GENERATOR_VERSION, self.clip_id, self.index, self.split, self.identity.to_json(),
                           self.voice.to_json(), self.sentence.to_json(), self.num_frames,
                           round(self.speed_level, 4), self.size, self.seed, self.engine], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def manifest_row(self) -> dict:
        return {"clip_id": self.clip_id, "split": self.split, "identity": self.identity.identity_id,
                "voice": self.voice.voice_id, "sentence": self.sentence.sentence_id,
                "num_frames": self.num_frames, "seconds": self.num_frames / FPS,
                "speed_level": round(self.speed_level, 4), "video": f"clips/{self.clip_id}.mp4",
                "audio": f"clips/{self.clip_id}.wav", "sidecar": f"clips/{self.clip_id}.json"}


def split_sizes(num_clips: int) -> dict[str, int]:
    """80 / 10 / 10, with at least one validation and one test clip from 3 clips on."""
    held = 0 if num_clips < 3 else max(1, round(0.1 * num_clips))
    return {"train": num_clips - 2 * held, "val": held, "test": held}


def _seconds_range(seconds: float | tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(seconds), float(seconds)) if np.isscalar(seconds) else (float(seconds[0]), float(seconds[1]))
    if not (0.5 <= lo <= hi <= 600):
        raise EmoError(f"clip length {seconds!r} s: give seconds between 0.5 and 600 (a number or a (min, max) pair)")
    return lo, hi


def plan_corpus(num_clips: int, seed: int, size: int = 256,
                seconds: float | tuple[float, float] = 5.0) -> list[ClipSpec]:
    """The clips of a corpus. Each split draws from its own pools of identities (about 2 clips each),
    voices (about 4 clips each) and sentences (about 1.3 clips each), so splits are disjoint in all
    three; speed levels are spread evenly over [0, 1) within each split."""
    if num_clips < 1:
        raise EmoError(f"--clips {num_clips}: ask for at least one clip")
    if size < 64 or size % 2:
        raise EmoError(f"--size {size}: give an even frame size of at least 64 pixels")
    lo, hi = _seconds_range(seconds)
    engine = speech_engine()
    plan = _rng(seed, _PLAN)
    specs: list[ClipSpec] = []
    counters = {"identity": 0, "voice": 0, "sentence": 0}

    def pool(kind: str, count: int, make) -> list:
        items = []
        for _ in range(count):
            k = counters[kind]
            counters[kind] += 1
            items.append(make(k))
        return items

    for split, n in split_sizes(num_clips).items():
        if n == 0:
            continue
        identities = pool("identity", math.ceil(n / 2),
                          lambda k: Identity.sample(_rng(seed, _IDENTITY, k), f"id{k:05d}"))
        voices = pool("voice", math.ceil(n / 4), lambda k: Voice.sample(_rng(seed, _VOICE, k), f"v{k:04d}"))
        sentences = pool("sentence", math.ceil(n / 1.3),
                         lambda k: Sentence.sample(_rng(seed, _SENTENCE, k), f"s{k:05d}", (lo + hi) / 2 - 0.6))
        # every pool member is used; assignments shuffled
        pick = {name: plan.permutation(np.arange(n) % len(items))
                for name, items in (("identity", identities), ("voice", voices), ("sentence", sentences))}
        speed = (plan.permutation(n) + plan.uniform(size=n)) / n
        for j in range(n):
            index = len(specs)
            num_frames = max(1, round(plan.uniform(lo, hi) * FPS))
            specs.append(ClipSpec(f"c{index:05d}", index, split, identities[pick["identity"][j]],
                                  voices[pick["voice"][j]], sentences[pick["sentence"][j]], num_frames,
                                  float(speed[j]), size, seed, engine))
    return specs


def render_clip(spec: ClipSpec, clips_dir: Path) -> str:
    """Writes <clip_id>.wav, .mp4 and, last, the .json sidecar; returns the clip id."""
    rng = _rng(spec.seed, _CLIP, spec.index)
    rate = int(round(spec.voice.rate * rng.uniform(0.92, 1.08)))
    speech = synthesize(spec.sentence, spec.voice, rate, seed=spec.seed * 1_000_003 + spec.index)
    wave = place_in_clip(speech, spec.num_frames * SAMPLES_PER_FRAME, rng)          # (num_samples,)
    motion = face_motion(wave, SAMPLE_RATE, FPS, spec.speed_level, spec.identity.blink_rate, rng)

    write_bytes_atomic(clips_dir / f"{spec.clip_id}.wav", wav_bytes(wave))
    renderer = FaceRenderer(spec.identity, spec.size)
    boxes = []
    with Mp4Writer(clips_dir / f"{spec.clip_id}.mp4", spec.size, FPS, SAMPLE_RATE) as mp4:
        for t in range(spec.num_frames):
            frame, box = renderer.render(*motion.frame(t))
            mp4.write_frame(frame)
            boxes.append([round(v, 2) for v in box])
        mp4.write_audio(wave)

    sidecar = {
        "clip_id": spec.clip_id,
        "identity": spec.identity.identity_id,
        "voice": spec.voice.voice_id,
        "sentence": spec.sentence.sentence_id,
        "split": spec.split,
        "text": spec.sentence.text,
        "fps": FPS,
        "size": [spec.size, spec.size],
        "num_frames": spec.num_frames,
        "sample_rate": SAMPLE_RATE,
        "num_samples": int(len(wave)),
        "speed_level": round(spec.speed_level, 4),
        "rate_wpm": rate,
        "speech_engine": spec.engine,
        "spec": spec.key(),
        "frames": {
            "face_box": boxes,
            "mouth_open": rounded(motion.mouth_open.tolist()),
            "mouth_width": rounded(motion.mouth_width.tolist()),
            "brow_raise": rounded(motion.brow_raise.tolist()),
            "blink": rounded(motion.blink.tolist()),
            "yaw": rounded(motion.pose[:, 0].tolist(), 3),
            "pitch": rounded(motion.pose[:, 1].tolist(), 3),
            "roll": rounded(motion.pose[:, 2].tolist(), 3),
            "head_speed": rounded(motion.head_speed.tolist()),
        },
    }
    write_bytes_atomic(clips_dir / f"{spec.clip_id}.json", (json.dumps(sidecar) + "\n").encode())
    return spec.clip_id


def _is_done(spec: ClipSpec, clips_dir: Path) -> bool:
    sidecar = clips_dir / f"{spec.clip_id}.json"
    if not all((clips_dir / f"{spec.clip_id}{ext}").exists() for ext in (".json", ".mp4", ".wav")):
        return False
    try:
        return json.loads(sidecar.read_text()).get("spec") == spec.key()
    except (OSError, json.JSONDecodeError):
        return False


def _init_worker(parent_pid: int) -> None:
    import cv2

    cv2.setNumThreads(1)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose caller was killed would otherwise finish its queued clips and then hang."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(1)


def _manifest(specs: list[ClipSpec], seed: int, size: int, seconds) -> dict:
    identities, voices, sentences = {}, {}, {}
    for s in specs:
        identities[s.identity.identity_id] = {"split": s.split, **s.identity.to_json()}
        voices[s.voice.voice_id] = {"split": s.split, **s.voice.to_json()}
        sentences[s.sentence.sentence_id] = {"split": s.split, **s.sentence.to_json()}
    return {
        "generator": {"name": "emo-rt synth-data", "version": GENERATOR_VERSION, "seed": seed,
                      "num_clips": len(specs), "size": size, "fps": FPS, "sample_rate": SAMPLE_RATE,
                      "seconds": seconds if np.isscalar(seconds) else list(seconds),
                      "speech_engine": specs[0].engine if specs else speech_engine()},
        "splits": {split: [s.clip_id for s in specs if s.split == split] for split in SPLITS},
        "clips": [s.manifest_row() for s in specs],
        "identities": identities,
        "voices": voices,
        "sentences": sentences,
    }


def generate_corpus(out_dir: Path, num_clips: int, seed: int, size: int = 256,
                    seconds: float | tuple[float, float] = 5.0, workers: int | None = os.cpu_count(),
                    progress: bool = True) -> Path:
    """Renders `num_clips` clips into out_dir/clips and writes out_dir/manifest.json (returned).

    `seconds` is a clip length or a (min, max) range drawn per clip. Clips already finished with the
    same spec (an interrupted run) are kept, not redone. `workers` processes render in parallel
    (1: in this process); the output does not depend on it."""
    out_dir = Path(out_dir)
    clips_dir = out_dir / "clips"
    specs = plan_corpus(num_clips, seed, size, seconds)  # its EmoError before anything is written
    try:
        clips_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EmoError(f"cannot make the corpus folder {clips_dir}: {err.strerror or err}") from None
    remove_partials(clips_dir)  # left by a killed run
    warn_if_fallback()
    todo = [s for s in specs if not _is_done(s, clips_dir)]
    workers = max(1, min(workers or 1, len(todo) or 1))

    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("synth-data", total=len(specs), completed=len(specs) - len(todo))
        if workers == 1:
            for spec in todo:
                render_clip(spec, clips_dir)
                bar.advance(task)
        else:
            _render_parallel(todo, clips_dir, workers, lambda: bar.advance(task))

    manifest = out_dir / "manifest.json"
    write_bytes_atomic(manifest, (json.dumps(_manifest(specs, seed, size, seconds), indent=1) + "\n").encode())
    return manifest


def _render_parallel(todo: list[ClipSpec], clips_dir: Path, workers: int, advance) -> None:
    with one_thread_per_worker():  # the processes are the parallelism
        # forkserver: workers fork from a clean server that imported this module once (no threads of
        # the caller, e.g. the progress bar's, are inherited; no per-worker import cost)
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(os.getpid(),)) as pool:
            try:
                pending = {pool.submit(render_clip, spec, clips_dir) for spec in todo}
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        if future.exception() is not None:
                            raise future.exception()
                        advance()
            except BaseException:  # a failed clip, Ctrl-C, SIGTERM: finished clips stay, the rest stops now
                stop_workers(pool)
                remove_partials(clips_dir)  # what the stopped workers were writing
                raise
