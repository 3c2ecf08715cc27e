"""Stage 4 continued from the shipped student with a brow term: distillation as stage 4 trains it, plus
`weight` x the squared difference of the latent brow reader (reader.py) between the student's clean-latent
prediction and the clip's true latents, per frame. weight 0 is the control (the same extra steps, distillation
alone). With env TRUE_WEIGHT: also that weight x the face-weighted squared error of the clean-latent
prediction to the clip's latents (the control for any pull towards the true frames).

    python lab/brow_reader/finetune.py READER.pt WEIGHT STEPS OUT_MODEL_DIR      (env THREADS, default 2)
"""
import os
import sys
import time
from pathlib import Path

import torch
from reader import BrowReader  # this folder

from emo_rt.training.stages import weighted_mean

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stage4"))
from continued import Continuation  # noqa: E402

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
READER, WEIGHT, STEPS, OUT = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
TRUE_WEIGHT = float(os.environ.get("TRUE_WEIGHT", "0"))
run = Continuation()
reader = BrowReader()
reader.load_state_dict(torch.load(READER, weights_only=True)["state"])
reader.requires_grad_(False).eval()


def brows(latents):  # (B, C, f, h, w) -> (B, f)
    b, c, f, h, w = latents.shape
    return reader(latents.transpose(1, 2).reshape(b * f, c, h, w)).reshape(b, f)


t0 = time.time()
for step in range(STEPS):
    batch = run.batch(step)
    distill, drawn = run.distill(batch)
    truth = run.stage.clean_latents(batch)
    brow = (brows(drawn) - brows(truth)).square().mean()
    true = weighted_mean((drawn - truth).square(), run.loss_weight(batch))
    run.step(distill + WEIGHT * brow + TRUE_WEIGHT * true)
    if (step + 1) % 10 == 0:
        print(f"step {step + 1} distill {distill.item():.5f} brow {brow.item():.4f} true {true.item():.4f} "
              f"{(time.time() - t0) / (step + 1):.2f} s/step", flush=True)
run.save(OUT)
print("saved", OUT)
