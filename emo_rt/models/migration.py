"""How a saved model directory becomes the starting model of a later training stage.

A stage starts from the previous stage's output. Its recipe's config must match the saved one,
except for fields that shape only parts no earlier stage trained (`FIRST_TRAINED_IN`): a recipe that
adds the prosody row or refits the speed buckets can reuse finished earlier stages. A field that
reshapes a part (`RESHAPES`) re-initialises that part from its seeded init; every other part loads.
The VAE's fitted scaling factor (stage 0's, or an imported VAE's) is kept, whatever the recipe says.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from emo_rt.config import EmoConfig
from emo_rt.errors import WeightsError
from emo_rt.models.emo import EmoModel, load_part

# config field -> the first stage that trains what it shapes
FIRST_TRAINED_IN = {"anchor": 1, "audio.prosody": 2, "speed.bucket_centres": 3, "speed.bucket_radii": 3}
# config field -> the part whose tensor shapes it changes (that part starts from its init)
RESHAPES = {"anchor": "backbone", "audio.prosody": "audio_projector"}


def is_model_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and all((path / f"{p}.safetensors").is_file() for p in EmoModel.PARTS)


def trained_through(directory: str | Path | None) -> int:
    """The last stage that trained the model in `directory` (its training.json), -1 if none did."""
    info = Path(directory) / "training.json" if directory is not None else None
    if info is None or not info.is_file():
        return -1
    return int(json.loads(info.read_text()).get("stage", -1))


def config_changes(saved: EmoConfig, wanted: EmoConfig) -> list[str]:
    """Dotted names of the fields that differ, the VAE's fitted scaling factor aside."""
    a, b = _flat(_without_scaling(saved)), _flat(_without_scaling(wanted))
    return [name for name in a if a[name] != b[name]]


def with_scaling_factor(config: EmoConfig, value: float) -> EmoConfig:
    return dataclasses.replace(config, vae=dataclasses.replace(config.vae, scaling_factor=value))


def set_scaling_factor(model: EmoModel, value: float) -> None:
    """The VAE's latent scale, in its diffusers config and in the model's config alike."""
    model.vae.register_to_config(scaling_factor=value)
    model.config = with_scaling_factor(model.config, value)


def load_for_stage(directory: str | Path, config: EmoConfig, stage: int) -> tuple[EmoModel, str]:
    """The model saved in `directory`, under `config`, as the start of stage `stage`; and a note of
    what was adopted ("" when the configs match). A field that an earlier stage trained is refused."""
    directory = Path(directory)
    saved = EmoConfig.load(directory)
    changes = config_changes(saved, config)
    if not changes:
        return EmoModel.from_pretrained(directory), ""
    refused = [c for c in changes if FIRST_TRAINED_IN.get(c, -1) < stage]
    if refused:
        raise WeightsError(f"{directory} does not have the recipe's model config ({', '.join(refused)} "
                           "differ, and earlier stages trained what they shape)")
    fresh = sorted({RESHAPES[c] for c in changes if c in RESHAPES})
    model = EmoModel(with_scaling_factor(config, saved.vae.scaling_factor))
    for part in EmoModel.PARTS:
        if part not in fresh:
            load_part(getattr(model, part), directory / f"{part}.safetensors")
    note = f"stage {stage} adopts the recipe's {', '.join(changes)}"
    return model.eval(), note + (f"; re-initialised: {', '.join(fresh)}" if fresh else "")


def _without_scaling(config: EmoConfig) -> dict:
    data = config.to_dict()
    data["vae"].pop("scaling_factor")
    return data


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
