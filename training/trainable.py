"""What a stage trains: its parameter set (stages.py) minus the parameters the loss cannot reach, and
gradient checkpointing of the Backbone (sd15 memory)."""

from __future__ import annotations

import torch

from emo_rt.models import EmoModel


def apply_gradient_checkpointing(model: EmoModel) -> None:
    """Recompute the Backbone's resnets, spatial transformers and temporal modules in backward
    (state-dict keys unchanged: torch's checkpoint_wrapper strips its prefix)."""
    from diffusers.models.resnet import ResnetBlock2D
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )

    from emo_rt.models.temporal import TemporalModule
    from emo_rt.models.transformer import SpatialTransformer

    apply_activation_checkpointing(
        model.backbone, checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, CheckpointImpl.NO_REENTRANT),
        check_fn=lambda m: isinstance(m, (ResnetBlock2D, SpatialTransformer, TemporalModule)))


def parameters_in_graph(loss: torch.Tensor, model: torch.nn.Module) -> set[str]:
    """Names of the parameters `loss` depends on (walks the autograd graph, no backward)."""
    names = {id(p): n for n, p in model.named_parameters()}
    found, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) in names:
            found.add(names[id(variable)])
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def select_trainable(model: EmoModel, intended: set[str], probe_loss) -> tuple[list[str], list[torch.nn.Parameter], int]:
    """Freeze everything but `intended`, then also what `probe_loss()` (a forward on a real batch)
    does not reach. Returns the trained names, their parameters, and how many intended ones stay frozen."""
    for name, param in model.named_parameters():
        param.requires_grad_(name in intended)
    reachable = parameters_in_graph(probe_loss(), model) & intended
    for name, param in model.named_parameters():
        param.requires_grad_(name in reachable)
    named = [(n, q) for n, q in model.named_parameters() if n in reachable]
    return [n for n, _ in named], [q for _, q in named], len(intended) - len(reachable)
