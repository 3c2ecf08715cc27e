"""`emo-rt serve`: a web page where a portrait talks as it is generated, and an HTTP API beside it.

uploads (checks a request's files as `emo-rt render` checks its own) -> jobs (the queue: one model,
one render at a time, through `EmoPipeline.stream`) -> app (FastAPI routes, page.html) -> server
(uvicorn, signals, cleanup).
"""

from emo_rt.serve.server import ServeOptions, serve
from emo_rt.serve.uploads import Limits

__all__ = ["Limits", "ServeOptions", "serve"]
