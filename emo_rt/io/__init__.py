"""Media in and out: audio and reference-image loading, face crops, mp4 writing, previews.

DALI input pipelines live in `emo_rt.io.dali` (imported on demand: it pulls in torch).
"""

from emo_rt.io.audio import is_silent, load_audio, num_video_frames
from emo_rt.io.image import (
    FaceBox,
    NoFaceWarning,
    Reference,
    detect_face,
    face_centred_square_crop,
    face_mask,
    load_image,
    parse_face_box,
    prepare_reference,
    resize_image,
)
from emo_rt.io.preview import contact_sheet, preview_indices
from emo_rt.io.video import VideoInfo, VideoWriter, read_video

__all__ = [
    "FaceBox",
    "NoFaceWarning",
    "Reference",
    "VideoInfo",
    "VideoWriter",
    "contact_sheet",
    "detect_face",
    "face_centred_square_crop",
    "face_mask",
    "is_silent",
    "load_audio",
    "load_image",
    "num_video_frames",
    "parse_face_box",
    "prepare_reference",
    "preview_indices",
    "read_video",
    "resize_image",
]
