"""Start each window from the last motion frame noised to t (SDEdit-like), on the v2 stage-3 model:
kept as run (../../notes/default_model_v2.md).
    python motion_start.py STAGE_DIR [SPLIT] [THREADS]"""
exec(open(__file__.replace("motion_start.py", "teacher_forced.py")).read().split("    sch = DDIMScheduler")[0])
from diffusers import DDIMScheduler

with torch.no_grad():
    sch = DDIMScheduler.from_pretrained(W / "model", subfolder="scheduler")
    for t_start in (300, 500, 700):
        for steps in (1, 2, 4):
            ts = torch.linspace(t_start, 0, steps + 1)[:-1].round().long()
            z = sch.add_noise(last, torch.randn(z0.shape, generator=torch.Generator().manual_seed(0)), ts[:1])
            for i, t in enumerate(ts):
                v = model.backbone(z, t.reshape(1).expand(b), **cond)
                a = sch.alphas_cumprod[t]; x0 = a.sqrt() * z - (1 - a).sqrt() * v; eps = (1 - a).sqrt() * z + a.sqrt() * v
                if i + 1 < len(ts):
                    a2 = sch.alphas_cumprod[ts[i + 1]]; z = a2.sqrt() * x0 + (1 - a2).sqrt() * eps
                else:
                    z = x0
            print(f"motion start t={t_start} steps {steps}: x0 err %.3f rough %.2f PSNR %.2f" % (err(z), rough(z) / rough(z0), psnr(dec(z), truth)), flush=True)
