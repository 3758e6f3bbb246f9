"""The facts the engine and the Blender add-on share, each written once, here.

No imports at all: the add-on uses this file without stylecore installed. The extension zip
carries it as ``blender_addon/contract.py`` (tools/build_extension.py); in a checkout the
add-on's stand-in of that name loads this file by path.
"""

__all__ = [
    "FRAME_NAME",
    "IMAGE_EXTENSIONS",
    "LOSS_NETS",
    "MODES",
    "PRESERVE_COLORS",
    "PROTOCOL",
    "UNHASHED_FIELDS",
    "VIDEO_SUFFIXES",
]

# The worker protocol's version (docs/worker-protocol.md); 2 added the train and models jobs.
PROTOCOL = 2
# Output frame k of a job folder, numbered from 1.
FRAME_NAME = "frame_{:06d}.png"
# The job's `mode`, `preserve_colors` and `loss_net` choices; "auto" (first) picks the
# loss network where the job runs.
MODES = ("optimization", "style-video", "feedforward")
PRESERVE_COLORS = ("none", "luminance", "histogram")
LOSS_NETS = ("auto", "vgg19", "hed-vgg16", "random-vgg19")
# Outputs with these suffixes are encoded videos; any other output is a folder of PNG frames.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
# The files an image folder contributes as frames.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".exr", ".webp"})
# Job fields that never change a frame's pixels: neither the engine's job fingerprint nor
# the add-on's folder hash holds them. (`farm` and `chunk` change them for a temporal chain
# only; the engine's fingerprint decides when, the add-on's hash keeps them always.)
UNHASHED_FIELDS = frozenset({"output", "device", "batch_size", "audio", "compile", "tile", "keep_frames", "extra"})
