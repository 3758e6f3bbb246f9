"""Reading and writing frames: video and image-sequence sources, ffmpeg, encoding, image helpers."""
