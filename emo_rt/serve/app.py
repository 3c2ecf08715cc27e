"""The HTTP face of `emo-rt serve` (FastAPI): the page, the job API it uses, and `POST /api/render`
for scripts. Every refusal is a 4xx/5xx with `{"error": "one line"}`.

    GET  /                      the page
    GET  /api/info              model, render defaults, limits, portraits on offer, queue
    GET  /api/portraits/NAME    one of the portraits the server offers (--portraits)
    POST /api/jobs              multipart reference|portrait + audio [+ steps, cfg, seed, speed] -> 202 {id, position}
    GET  /api/jobs/ID           the job's status
    GET  /api/jobs/ID/events    server-sent events: `window` (its frames as base64 JPEGs) and `status`
    GET  /api/jobs/ID/video     the mp4 with the audio, once done
    DELETE /api/jobs/ID         cancel
    POST /api/render            the same form -> the mp4 itself, when rendered
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from python_multipart.multipart import parse_options_header
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from emo_rt import arguments as a
from emo_rt.io.audio import num_video_frames
from emo_rt.pipeline import RenderSettings
from emo_rt.serve.jobs import Job, JobQueue
from emo_rt.serve.uploads import Limits, RequestError, check_inputs, check_size, display_name, save_upload

logger = logging.getLogger(__name__)
FIELDS = ("reference", "portrait", "audio", "steps", "cfg", "seed", "speed")
KEEP_ALIVE_SECONDS = 15.0
BODY_TAIL, TAIL_BYTES = "emo_rt.body_tail", 200  # a boundary is at most 70 characters


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is refused with 413, by its Content-Length before
    it is read, or as it streams in (the form parser then raises BodyTooLarge)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"error": self.message(int(length))}, status_code=413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0
        tail = scope[BODY_TAIL] = bytearray()  # the body's last bytes: does a multipart body end as one?

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                seen += len(body)
                if seen > self.limit:
                    raise BodyTooLarge(self.message(seen))
                tail.extend(body)
                del tail[:-TAIL_BYTES]
            return message

        await self.app(scope, limited, send)

    def message(self, size: int) -> str:
        return (f"the request is too large: {size / 2**20:.1f} MB, this server takes at most "
                f"{self.limit / 2**20:.1f} MB (two files of --max-upload-mb)")


def list_portraits(directory: Path | None) -> dict[str, Path]:
    """The portraits a server offers by name: the images in `directory` (none without one)."""
    if directory is None:
        return {}
    suffixes = {".png", ".jpg", ".jpeg", ".webp"}
    return {p.name: p for p in sorted(Path(directory).iterdir()) if p.suffix.lower() in suffixes and p.is_file()}


def create_app(queue: JobQueue, settings: RenderSettings, limits: Limits, portraits: dict[str, Path],
               model: str) -> BodyLimit:
    """The ASGI app over `queue`; `settings` are every render's (the model's defaults, the server's
    audio chunking and overlap), of which a request may set steps, cfg, seed and speed."""
    app = FastAPI(title="emo-rt", docs_url=None, redoc_url=None, openapi_url=None)
    config = queue.pipeline.config
    page = resources.files("emo_rt.serve").joinpath("page.html").read_text()

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError):
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def broken(request: Request, err: Exception):  # a bug: still one JSON line, and the log has it
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    @app.get("/api/info")
    async def info():
        return {"model": model, "resolution": config.resolution, "fps": config.fps,
                "frames_per_window": config.num_frames,
                "defaults": {"scheduler": settings.scheduler, "steps": settings.steps, "cfg": settings.cfg,
                             "seed": settings.seed, "audio_chunk_seconds": settings.audio_chunk_seconds},
                "limits": {"max_upload_mb": limits.max_upload_bytes / 2**20,
                           "max_audio_seconds": limits.max_audio_seconds, "max_steps": limits.max_steps},
                "portraits": list(portraits), "queue": queue.snapshot()}

    @app.get("/api/portraits/{name}")
    async def portrait(name: str):
        if name not in portraits:
            raise RequestError(f"no portrait named {display_name(name, '?')!r}: GET /api/info lists them", 404)
        return FileResponse(portraits[name])

    async def new_job(request: Request, pinned: bool) -> Job:
        form = await _form(request)
        job_settings = _settings(form, settings, limits)
        if queue.closing:
            raise RequestError("the server is shutting down: no new renders", 503)
        job_id, directory = queue.new_directory()
        try:
            names: dict[Path, str] = {}
            reference = form.get("reference")
            if isinstance(reference, UploadFile):
                image = await _saved(reference, directory / "reference", "image", names, limits)
            elif form.get("portrait"):
                name = str(form.get("portrait"))
                if name not in portraits:
                    raise RequestError(f"no portrait named {display_name(name, '?')!r}: GET /api/info lists them")
                image = portraits[name]
                names[image] = name
            else:
                raise RequestError("no portrait: send an image file as the multipart field 'reference' "
                                   "(or 'portrait': a name GET /api/info lists)")
            audio = form.get("audio")
            if not isinstance(audio, UploadFile):
                raise RequestError("no audio: send a speech or song file as the multipart field 'audio'")
            sound = await _saved(audio, directory / "audio", "audio", names, limits)
            inputs, warned = await run_in_threadpool(check_inputs, image, sound, names, config.resolution,
                                                     config.fps, config.audio.sample_rate, limits)
            total = num_video_frames(inputs.waveform.size, config.audio.sample_rate, config.fps)
            job = Job(job_id, directory, inputs, job_settings, total, config.fps, warned, pinned=pinned)
            queue.submit(job)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            await form.close()
        return job

    @app.post("/api/jobs", status_code=202)
    async def submit(request: Request):
        job = await new_job(request, pinned=False)
        return JSONResponse(queue.status(job), status_code=202)

    def job_of(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None:
            raise RequestError("no such job (finished jobs are kept for a while, then removed)", 404)
        return job

    @app.get("/api/jobs/{job_id}")
    async def status(job_id: str):
        return queue.status(job_of(job_id))

    @app.delete("/api/jobs/{job_id}")
    async def cancel(job_id: str):
        job = job_of(job_id)
        queue.cancel(job, "cancelled by the client")
        return queue.status(job)

    @app.get("/api/jobs/{job_id}/video")
    async def video(job_id: str):
        job = job_of(job_id)
        if job.state != "done":
            raise RequestError(f"the video is not ready: the job is {job.state}"
                               + (f" ({job.error})" if job.error else ""), 409)
        return FileResponse(job.video, media_type="video/mp4", filename=f"emo-rt-{job.id}.mp4")

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request):
        job = job_of(job_id)
        last = request.headers.get("last-event-id", "")
        first = int(last) + 1 if last.isdigit() else 0  # a reconnecting EventSource resumes after its last window
        return StreamingResponse(_events(queue, job, first), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/api/render")
    async def render(request: Request):
        job = await new_job(request, pinned=True)
        answered = False
        try:
            await _until_over(queue, job, request)
            if job.state != "done":
                return JSONResponse({"error": job.error}, status_code=job.error_status)
            done = queue.status(job)
            headers = {"X-Emo-Rt-Frames": str(done["frames"]),
                       "X-Emo-Rt-Real-Time-Factor": str(done["real_time_factor"]),
                       "X-Emo-Rt-First-Frames-Seconds": str(done["first_frames_seconds"]),
                       "X-Emo-Rt-Seconds-Waiting": str(done["seconds_waiting"]),
                       "X-Emo-Rt-Reference": str(done["reference"])}
            answered = True  # the file goes after it is sent
            return FileResponse(job.video, media_type="video/mp4", filename="emo-rt.mp4", headers=headers,
                                background=BackgroundTask(queue.drop, job))
        finally:
            if not answered:
                queue.drop(job)

    return BodyLimit(app, limits.max_request_bytes)


async def _form(request: Request):
    try:
        form = await request.form(max_files=2, max_fields=len(FIELDS))
    except BodyTooLarge as err:
        raise RequestError(str(err), 413) from None
    except (MultiPartException, HTTPException) as err:  # Starlette turns a parser's complaint into a 400
        detail = err.message if isinstance(err, MultiPartException) else err.detail
        raise RequestError(f"the request is not a multipart form this server reads: {detail}") from None
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if boundary and b"--" + boundary + b"--" not in request.scope.get(BODY_TAIL, b""):
        await form.close()
        raise RequestError("the multipart body is truncated or malformed: it does not end with its closing boundary")
    unknown = [key for key in form if key not in FIELDS]
    if unknown:
        await form.close()
        raise RequestError(f"unknown field {display_name(unknown[0], '?')!r}: the fields are {', '.join(FIELDS)}")
    return form


def _settings(form, base: RenderSettings, limits: Limits) -> RenderSettings:
    """The render settings a request asks for, each field range-checked as the CLI checks its flags."""
    parsers = {"steps": a.integer(1, limits.max_steps), "cfg": a.CFG, "seed": a.SEED, "speed": a.number(0.0, 10.0)}
    values = {}
    for name, parse in parsers.items():
        text = form.get(name)
        if text is None or (isinstance(text, str) and not text.strip()):
            continue
        if not isinstance(text, str):
            raise RequestError(f"{name} must be a form value, not a file")
        try:
            values[name] = parse(text.strip())
        except argparse.ArgumentTypeError as err:
            raise RequestError(f"{name}: {err}") from None
    return replace(base, **values)


async def _saved(upload: UploadFile, path: Path, what: str, names: dict[Path, str], limits: Limits) -> Path:
    name = display_name(upload.filename, what)
    check_size(upload.size, what, name, limits)
    names[save_upload(await upload.read(), path)] = name
    return path


def _listen(job: Job) -> tuple[asyncio.Event, Callable[[], None]]:
    """An asyncio.Event set whenever `job` changes (from the render thread)."""
    loop, wake = asyncio.get_running_loop(), asyncio.Event()

    def listener() -> None:
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop has closed (shutdown): nobody listens any more
            pass

    job.listeners.add(listener)
    return wake, listener


async def _until_over(queue: JobQueue, job: Job, request: Request) -> None:
    """Wait for `job` to finish; a client that went away cancels it."""
    wake, listener = _listen(job)
    try:
        while not job.over:
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), 1.0)
            except TimeoutError:
                if await request.is_disconnected():
                    queue.cancel(job, "the client went away")
    finally:
        job.listeners.discard(listener)


async def _events(queue: JobQueue, job: Job, first_window: int):
    """Server-sent events: each window once (id = its index), the status whenever it changes, until
    the job is over and every window was sent."""
    wake, listener = _listen(job)
    try:
        sent, last_status = first_window, None
        while True:
            wake.clear()
            while sent < len(job.windows):
                frames = job.windows[sent]
                first_frame = sum(len(w) for w in job.windows[:sent])
                yield (f"id: {sent}\nevent: window\ndata: "
                       f"{json.dumps({'window': sent, 'first': first_frame, 'frames': frames})}\n\n")
                sent += 1
            status = queue.status(job)
            if status != last_status:
                yield f"event: status\ndata: {json.dumps(status)}\n\n"
                last_status = status
            if job.over and sent >= len(job.windows):
                return
            try:
                await asyncio.wait_for(wake.wait(), KEEP_ALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
    finally:
        job.listeners.discard(listener)
