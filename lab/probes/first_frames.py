"""lab probe (not installed): the time to the first window, split into reading the inputs and the window loop.
    python lab/probes/first_frames.py"""
import time
from pathlib import Path

started = time.perf_counter()
from emo_rt.pipeline import EmoPipeline, load_inputs  # noqa: E402  (timed: imports are part of start-up)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pipe = EmoPipeline.from_pretrained(None)
loaded = time.perf_counter()
for run in range(2):  # cold, then warm
    a = time.perf_counter()
    inputs = load_inputs(EXAMPLES / "ref.png", EXAMPLES / "speech.wav", 128, 25)
    b = time.perf_counter()
    windows = iter(pipe(inputs.reference, inputs.waveform, pipe.defaults))
    first = next(windows)
    c = time.perf_counter()
    for _ in windows:
        pass
    d = time.perf_counter()
    print(f"run {run}: inputs {b - a:.2f} s, first window ({len(first)} frames) {c - b:.2f} s after the loop "
          f"starts, rest {d - c:.2f} s")
print(f"imports + model load {loaded - started:.2f} s")
