"""How the evaluator's networks are stored: a JSON config beside an fp16 safetensors file, read strictly."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from emo_rt.errors import WeightsError
from emo_rt.io.files import atomic_path, write_json_atomic
from emo_rt.parse import ParseError, parse


def load_network(directory: Path, config_name: str, weights_name: str, config_cls, network_cls) -> nn.Module:
    """`network_cls(config)` with the weights in `directory`; one WeightsError line when they are
    missing or do not match."""
    from safetensors.torch import load_file

    config_path, weights_path = directory / config_name, directory / weights_name
    if not (config_path.is_file() and weights_path.is_file()):
        raise WeightsError(f"no evaluator network in {directory}: it needs {config_name} and {weights_name} "
                           "(train one with `emo-rt train-evaluator`)")
    try:  # strict: every key present, none unknown
        config = parse(config_cls, json.loads(config_path.read_text()), require_all=True)
    except ParseError as err:
        raise WeightsError(f"{config_path}: {err}") from None
    network = network_cls(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(weights_path).items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise WeightsError(f"{weights_path} does not match {config_path}: {str(err).splitlines()[0]}") from None
    return network.eval()


def save_network(network: nn.Module, directory: Path, config_name: str, weights_name: str,
                 dtype: torch.dtype = torch.float16) -> None:
    """Floating tensors stored as `dtype` (fp16 by default: the outputs move by < 1e-3)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in network.state_dict().items()}
    with atomic_path(directory / weights_name) as tmp:
        save_file(state, str(tmp))
    write_json_atomic(directory / config_name, asdict(network.config))
