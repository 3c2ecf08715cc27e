"""Render with every window anchored on the reference (a checkpoint trained with last-frame anchors).
    python refanchor_render.py render REF AUDIO -o OUT --weights MODEL ... (emo-rt render's arguments)"""
import sys
import emo_rt.pipeline as pipeline
from emo_rt.cli import main
pipeline.anchor_latents = lambda reference, motion: reference  # lab: the reference as every window's anchor
sys.exit(main(sys.argv[1:]))
