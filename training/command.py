"""The arguments of `emo-rt train` (light: the CLI builds its parser without importing torch)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--recipe", required=True, help="training/recipes/<name>.yaml")
    parser.add_argument("--stage", required=True, type=int, choices=(0, 1, 2, 3))
    parser.add_argument("--data", required=True, help="preprocessed shards (emo-rt preprocess OUT)")
    parser.add_argument("--out", required=True, help="run directory shared by the stages")
    parser.add_argument("--resume", action="store_true", help="continue from the stage's latest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser
