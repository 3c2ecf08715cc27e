"""lab probe (not installed): the time to the first window, split into reading the inputs and the window loop.
    python lab/probes/first_frames.py"""
import time

t0 = time.perf_counter()
from emo_rt.pipeline import EmoPipeline, load_inputs

pipe = EmoPipeline.from_pretrained(None)
t1 = time.perf_counter()
for run in range(2):
    a = time.perf_counter()
    inp = load_inputs("/work/main/examples/ref.png", "/work/main/examples/speech.wav", 128, 25)
    b = time.perf_counter()
    it = iter(pipe(inp.reference, inp.waveform, pipe.defaults))
    first = next(it)
    c = time.perf_counter()
    for _ in it: pass
    d = time.perf_counter()
    print(f"run {run}: inputs {b - a:.2f} s, first window ({len(first)} frames) {c - b:.2f} s after the loop starts, rest {d - c:.2f} s")
print(f"imports + model load {t1 - t0:.2f} s")
