"""Kernel tests run on CPU through Triton's interpreter when no GPU is present.

TRITON_INTERPRET is read when a kernel is decorated, so it is set here, before any test module
imports emo_rt.kernels (and only without CUDA, so a GPU run tests the compiled kernels).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
