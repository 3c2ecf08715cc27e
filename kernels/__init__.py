"""Triton kernels (one file per op: kernel, launcher, torch reference) and the processor swap.

Importing this package does not import Triton; the kernels load when a Triton processor is used.
"""

from emo_rt.kernels.processors import ATTENTION_KINDS, resolve_attention, select_attention

__all__ = ["ATTENTION_KINDS", "resolve_attention", "select_attention"]
