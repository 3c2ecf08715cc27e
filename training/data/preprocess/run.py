"""`preprocess(INPUT, OUT)`: walk the input, process sources in parallel processes, pack the kept
clips into shards, fit the speed buckets, write index.json and report.json.

Resuming: every shard names the sources it finished (its safetensors metadata), sources that kept
nothing are appended to OUT/rejected.jsonl, and a worker's finished but not yet packed clips wait in
OUT/.work/<source id>/ (outcome.json written last). A rerun skips finished sources, packs waiting
ones, and processes the rest; the index holds every shard's clips. Nothing written is rewritten.
(To retry rejected sources, delete their lines from rejected.jsonl.)
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
import traceback
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from emo_rt.config import SpeedConfig
from emo_rt.errors import InputError
from emo_rt.io.files import atomic_path, write_json_atomic
from emo_rt.io.shards import CLIP_TENSORS, ClipData, ClipEntry, ShardWriter
from emo_rt.runtime.progress import progress_bar

from ..speed_buckets import fit_speed_buckets
from ..workers import one_thread_per_worker, stop_workers
from .clip import ClipSettings, Source, iter_clips
from .decode import VIDEO_EXTENSIONS
from .reject import FAILED, ClipRejected
from .sources import find_sources

WORK_DIR = ".work"
REJECTED_LOG = "rejected.jsonl"
LOG_FILE = "preprocess.log"  # the native libraries' stderr (mediapipe logs every graph it builds)
CRASHES_BEFORE_REJECT = 2  # a source in flight when a worker process died this often is rejected


@dataclass
class PreprocessReport:
    """What `preprocess` did; `summary()` is the text the CLI prints. Totals cover the whole OUT
    folder (earlier runs included); `processed` / `resumed` count sources of this run."""

    out_dir: str
    sources: int = 0  # found in the input
    processed: int = 0  # worked on in this run
    resumed: int = 0  # finished by an earlier run, not redone
    kept_clips: int = 0
    kept_sources: int = 0
    kept_hours: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> rejected sources or segments
    rejections: list[dict] = field(default_factory=list)  # {"source", "id", "reason", "detail"}
    clips: list[dict] = field(default_factory=list)  # kept: {"source", "id", "start_frame", "crop", ...}
    speed_buckets: dict = field(default_factory=dict)
    seconds: float = 0.0  # wall time of this run

    def summary(self) -> str:
        lines = [f"{self.out_dir}: kept {self.kept_clips} clips from {self.kept_sources} sources "
                 f"({self.kept_hours:.2f} h); {self.processed} sources processed in {self.seconds:.0f} s, "
                 f"{self.resumed} done before"]
        if self.rejected:
            reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.rejected.items()))
            lines.append(f"rejected: {reasons} (details in {Path(self.out_dir) / 'report.json'})")
        return "\n".join(lines)


def preprocess(input_dir: str | Path, out_dir: str | Path, resolution: int = 128, workers: int | None = None,
               require_audio: bool = True, progress: bool = True, *, clips_per_shard: int = 32,
               shard_bytes: int = 1 << 30, num_buckets: int = len(SpeedConfig().bucket_centres),
               **settings) -> PreprocessReport:
    """Turn a folder of talking-head videos (or frame folders) into training shards in `out_dir`.

    `settings` are ClipSettings fields (min_frames, max_seconds, crop_scale, ...). `workers`
    processes handle whole sources (default: the CPU count; 1 runs in this process)."""
    started = time.perf_counter()
    out = Path(out_dir)
    clip_settings = ClipSettings(resolution=resolution, require_audio=require_audio, **settings)
    sources = find_sources(input_dir, exclude=out)
    if not sources:
        raise InputError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) or folders of images under {input_dir}")
    out.mkdir(parents=True, exist_ok=True)

    state = _State.load(out, resolution)
    writer = ShardWriter(out, resolution, fps=clip_settings.fps, sample_rate=clip_settings.sample_rate,
                         clips_per_shard=1 << 30, first_shard=state.next_shard)
    packer = _Packer(out, writer, state, clips_per_shard, shard_bytes)
    todo = [s for s in sources if s.relpath not in state.done]
    report = PreprocessReport(str(out), sources=len(sources), resumed=len(sources) - len(todo))

    with progress_bar("counts", enabled=progress) as bar:
        def counts() -> str:
            return (f"kept {state.kept_sources() + packer.kept_sources} "
                    f"rejected {state.rejected_sources() + packer.rejected_sources}")

        task = bar.add_task("preprocess", total=len(sources), completed=report.resumed, counts=counts())

        def finished(record: dict) -> None:
            packer.add(record)
            report.processed += 1
            bar.update(task, advance=1, counts=counts())

        waiting = [s for s in todo if _outcome_path(out, s).is_file()]  # processed by a killed run
        fresh = [s for s in todo if s.relpath not in {w.relpath for w in waiting}]
        for source in waiting:
            finished(json.loads(_outcome_path(out, source).read_text()))
        _run(fresh, clip_settings, out, workers or os.cpu_count() or 1, finished)
        packer.flush()

    state = _State.load(out, resolution)  # everything is in shards / the log now
    entries = state.entries
    train = [e for e in entries if e.split == "train"] or entries
    report.speed_buckets = _fit_buckets(out, train, num_buckets) if train else {}
    written_now = set(writer.entries)
    writer.close(report.speed_buckets, extra_entries=[e for e in entries if e not in written_now])
    _fill_report(report, state, clip_settings.fps)
    report.seconds = round(time.perf_counter() - started, 2)
    write_json_atomic(out / "report.json", asdict(report))
    work = out / WORK_DIR
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    return report


# ---- state on disk ------------------------------------------------------------------------------

@dataclass
class _State:
    """What earlier runs finished: source records by relative path, index entries, next shard."""

    done: dict[str, dict]
    entries: list[ClipEntry]
    next_shard: int

    @classmethod
    def load(cls, out: Path, resolution: int) -> "_State":
        done, entries, next_shard = {}, [], 0
        for path in sorted(out.glob("shard-*.safetensors")):
            with safe_open(str(path), framework="numpy") as handle:
                meta = handle.metadata() or {}
            if "sources" not in meta:
                raise InputError(f"{path} was not written by emo-rt preprocess; give an empty output folder")
            if int(meta.get("resolution", resolution)) != resolution:
                raise InputError(f"{out} holds shards at resolution {meta['resolution']}, not {resolution}: "
                                 "pass that --resolution to continue it, or use a new output folder")
            for record in json.loads(meta["sources"]):
                done[record["source"]] = record
            entries += [ClipEntry(shard=path.name, **e) for e in json.loads(meta["clips"])]
            next_shard = max(next_shard, int(path.stem.split("-")[1]) + 1)
        log = out / REJECTED_LOG
        if log.is_file():
            for line in log.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed run may be cut
                    continue
                done[record["source"]] = record
        return cls(done, entries, next_shard)

    def kept_sources(self) -> int:
        return sum(bool(r["kept"]) for r in self.done.values())

    def rejected_sources(self) -> int:
        return sum(not r["kept"] for r in self.done.values())


class _Packer:
    """Moves finished sources' clips from OUT/.work into shards (all clips of a source in one shard)."""

    def __init__(self, out: Path, writer: ShardWriter, state: _State, clips_per_shard: int, shard_bytes: int):
        self.out, self.writer, self.state = out, writer, state
        self.clips_per_shard, self.shard_bytes = clips_per_shard, shard_bytes
        self.pending: list[dict] = []
        self.kept_sources = self.rejected_sources = 0

    def add(self, record: dict) -> None:
        work = self.out / WORK_DIR / record["id"]
        if not record["kept"]:
            with open(self.out / REJECTED_LOG, "a") as log:
                log.write(json.dumps(record) + "\n")
                log.flush()
                os.fsync(log.fileno())
            shutil.rmtree(work, ignore_errors=True)
            self.rejected_sources += 1
            return
        for clip in record["kept"]:
            tensors = load_file(str(work / f"{clip['id']}.safetensors"))
            data = ClipData(**{name: tensors.get(name) for name in CLIP_TENSORS})
            self.writer.add(clip["id"], data, split=record["split"], identity=record["identity"],
                            source=record["source"])
        self.pending.append(record)
        self.kept_sources += 1
        if self.writer.pending_clips >= self.clips_per_shard or self.writer.pending_bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.writer.flush(metadata={"sources": json.dumps(self.pending)})
        for record in self.pending:
            shutil.rmtree(self.out / WORK_DIR / record["id"], ignore_errors=True)
        self.pending = []


def _outcome_path(out: Path, source: Source) -> Path:
    return out / WORK_DIR / source.id / "outcome.json"


# ---- workers ------------------------------------------------------------------------------------

def work(source: Source, settings: ClipSettings, out: Path) -> dict:
    """Process one source; its kept clips go to OUT/.work/<id>/ as they come, outcome.json last.
    Returns the outcome record."""
    folder = out / WORK_DIR / source.id
    shutil.rmtree(folder, ignore_errors=True)  # a killed earlier attempt
    folder.mkdir(parents=True)
    kept, rejected = [], []
    try:
        for clip in iter_clips(source, settings, rejected):
            path = folder / f"{clip.id}.safetensors"
            with atomic_path(path) as tmp:
                save_file({name: np.ascontiguousarray(getattr(clip.data, name)) for name in CLIP_TENSORS
                           if getattr(clip.data, name) is not None}, str(tmp))
            kept.append(clip.record(settings.fps))
    except ClipRejected as e:
        kept, rejected = [], [{"id": source.id, "reason": e.reason, "detail": e.detail}]
    except Exception as e:  # noqa: BLE001 - bad input must not stop the run; the report names the error
        where = traceback.extract_tb(e.__traceback__)[-1]
        kept, rejected = [], [{"id": source.id, "reason": FAILED,
                               "detail": f"{type(e).__name__}: {e} ({Path(where.filename).name}:{where.lineno})"}]
    if not kept:
        for path in folder.glob("*.safetensors"):
            path.unlink()
    record = {"source": source.relpath, "id": source.id, "split": source.split, "identity": source.identity,
              "kept": kept, "rejected": rejected}
    write_json_atomic(folder / "outcome.json", record, indent=None)
    return record


def _drop_unfinished(out: Path, sources) -> None:
    """Remove the work folders of interrupted sources (no outcome.json: the next run redoes them)."""
    for source in sources:
        if not _outcome_path(out, source).is_file():
            shutil.rmtree(out / WORK_DIR / source.id, ignore_errors=True)
    work = out / WORK_DIR
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()


def _crash_record(source: Source) -> dict:
    return {"source": source.relpath, "id": source.id, "split": source.split, "identity": source.identity,
            "kept": [], "rejected": [{"id": source.id, "reason": FAILED,
                                      "detail": f"the worker process died {CRASHES_BEFORE_REJECT} times on it"}]}


def _init_worker(log_path: str) -> None:
    import cv2

    cv2.setNumThreads(1)
    _redirect_native_stderr(log_path)


def _redirect_native_stderr(log_path: str) -> int:
    """Point file descriptor 2 at `log_path` (mediapipe's C++ logging would break up the progress
    bar); returns a duplicate of the old descriptor to restore it."""
    saved = os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    return saved


def _run(todo: list[Source], settings: ClipSettings, out: Path, workers: int, finished) -> None:
    if not todo:
        return
    log_path = str(out / LOG_FILE)
    if workers == 1:
        saved = _redirect_native_stderr(log_path)
        try:
            for source in todo:
                try:
                    record = work(source, settings, out)
                except BaseException:  # Ctrl-C, SIGTERM (work() reports every Exception in its record)
                    _drop_unfinished(out, [source])
                    raise
                finished(record)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        return
    with one_thread_per_worker():
        _run_pool(todo, settings, out, min(workers, len(todo)), finished, log_path)


def _run_pool(todo: list[Source], settings: ClipSettings, out: Path, workers: int, finished, log_path: str) -> None:
    """At most `workers` sources in flight, so when a worker process dies the suspects are known."""
    queue, crashes = deque(todo), Counter()
    context = multiprocessing.get_context("spawn")
    while queue:
        running = {}
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(log_path,)) as pool:
            try:
                while queue or running:
                    while queue and len(running) < workers:
                        source = queue.popleft()
                        running[pool.submit(work, source, settings, out)] = source
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        record = future.result()
                        finished(record)
                        del running[future]
            except BrokenProcessPool:
                for source in running.values():
                    crashes[source.relpath] += 1
                    if crashes[source.relpath] >= CRASHES_BEFORE_REJECT:
                        finished(_crash_record(source))
                    else:
                        queue.appendleft(source)
            except BaseException:  # Ctrl-C, SIGTERM: stop the workers now; finished sources stay resumable
                stop_workers(pool)
                _drop_unfinished(out, running.values())
                raise


def _fit_buckets(out: Path, entries: list[ClipEntry], num_buckets: int) -> dict:
    speeds = []
    for shard in sorted({e.shard for e in entries}):
        with safe_open(str(out / shard), framework="numpy") as handle:
            speeds += [handle.get_tensor(f"{e.id}.head_speed") for e in entries if e.shard == shard]
    return fit_speed_buckets(speeds, num_buckets)


def _fill_report(report: PreprocessReport, state: _State, fps: int) -> None:
    reasons: Counter = Counter()
    for record in sorted(state.done.values(), key=lambda r: r["source"]):
        for clip in record["kept"]:
            report.clips.append({"source": record["source"], **clip})
        for rejection in record["rejected"]:
            reasons[rejection["reason"]] += 1
            report.rejections.append({"source": record["source"], **rejection})
    report.kept_clips = len(report.clips)
    report.kept_sources = state.kept_sources()
    report.kept_hours = round(sum(c["num_frames"] for c in report.clips) / fps / 3600, 4)
    report.rejected = dict(reasons)
