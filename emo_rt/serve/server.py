"""`emo-rt serve`: load the model once, bind the port, run the app under uvicorn until SIGTERM or
Ctrl-C. On a signal: no new jobs, waiting jobs fail with a clear status, the rendering one gets
`shutdown_grace` seconds to finish and is then stopped, open requests are answered, and every
temporary file goes."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from emo_rt.errors import EmoError
from emo_rt.serve.uploads import Limits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 7860
    weights: Path | None = None  # None: the model shipped with emo-rt
    portraits: Path | None = None  # a folder of images the page offers to pick
    limits: Limits = field(default_factory=Limits)
    max_queue: int = 16  # renders waiting at most
    audio_chunk_seconds: float = 2.0  # the audio encoder's chunk: the first frames wait for about this + 1 s of audio
    shutdown_grace: float = 10.0  # seconds a render in flight may take to finish after SIGTERM
    threads: int | None = None  # the render thread's torch intra-op threads (None: torch's)
    backend: str = "torch"  # or onnxruntime / openvino on the engines in `engines`
    engines: Path | None = None
    dtype: str | None = None  # None: the backend's default (load_components)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, or one EmoError line saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise EmoError(f"--host {host}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise EmoError(f"cannot listen on {host}:{port}: {err.strerror or err} (another server there? pick "
                       f"another --port)") from None
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(options: ServeOptions, say=print) -> None:
    """Serve until a signal; `say` gets the lines a person should see (the address, warnings)."""
    import torch
    import uvicorn

    from emo_rt.pipeline import EmoPipeline, default_model_dir, preload_input_readers
    from emo_rt.runtime.overlap import overlap_pays
    from emo_rt.serve.app import create_app, list_portraits
    from emo_rt.serve.jobs import JobQueue

    if options.portraits is not None and not Path(options.portraits).is_dir():
        raise EmoError(f"--portraits {options.portraits}: not a directory")
    portraits = list_portraits(options.portraits)
    if options.portraits is not None and not portraits:
        raise EmoError(f"--portraits {options.portraits}: no png, jpg or webp images in it")
    sock = bind(options.host, options.port)
    weights = Path(options.weights) if options.weights is not None else default_model_dir()
    # one model in memory; reference features cached in memory
    pipeline = EmoPipeline.from_pretrained(weights, dtype=options.dtype and getattr(torch, options.dtype),
                                           backend=options.backend, engine_dir=options.engines,
                                           threads=options.threads)
    preload_input_readers()  # the first upload is read at once, not after 1.9 s of imports
    threads = options.threads or torch.get_num_threads()
    settings = replace(pipeline.defaults, audio_chunk_seconds=options.audio_chunk_seconds,
                       overlap=overlap_pays(getattr(pipeline.components, "device", "cpu"), threads))
    scratch = Path(tempfile.mkdtemp(prefix="emo-rt-serve-"))
    queue = JobQueue(pipeline, scratch, options.max_queue, threads=options.threads)
    grace = options.shutdown_grace

    class Server(uvicorn.Server):
        stopped_by: int | None = None

        def handle_exit(self, sig, frame) -> None:  # SIGTERM / SIGINT, between two bytecodes of the main thread
            self.stopped_by = sig
            # not here: the main thread may be inside the queue's lock
            threading.Thread(target=queue.shut_down, args=(grace,), name="emo-rt-serve-shutdown").start()
            super().handle_exit(sig, frame)

    try:
        app = create_app(queue, settings, options.limits, portraits, model=weights.name)
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=int(grace) + 30)
        if not is_loopback(options.host):
            say(f"emo-rt serve: warning: listening on {options.host}: anyone who reaches this port can render "
                "(there is no authentication)")
        say(f"emo-rt serve: http://{_url_host(options.host)}:{options.port}/ ({weights.name}, "
            f"{settings.steps} steps, cfg {settings.cfg:g}, {pipeline.components.name}; POST /api/render for scripts)")
        server = Server(config)
        server.run(sockets=[sock])  # re-raises the signal that stopped it: KeyboardInterrupt, Terminated
        if server.stopped_by == signal.SIGINT:  # SIGINT inherited ignored (started with `&` by a script): still 130
            raise KeyboardInterrupt
    finally:
        queue.shut_down(grace)
        queue.close(timeout=grace + 30)
        sock.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
