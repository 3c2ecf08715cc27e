"""The EMO model parts, each with explicit tensor interfaces."""

from emo_rt.models.audio import AudioEncoder, AudioProjector
from emo_rt.models.emo import EmoModel
from emo_rt.models.face_locator import FaceLocator
from emo_rt.models.speed import SpeedEncoder
from emo_rt.models.unet import Backbone, ReferenceNet

__all__ = ["AudioEncoder", "AudioProjector", "Backbone", "EmoModel", "FaceLocator", "ReferenceNet",
           "SpeedEncoder"]
