"""Every access to the sequencer and animation API, so Blender version differences live here.

Blender 4.2 to 5.0 renamed ``Sequence`` to ``Strip`` and ``sequences``/``sequences_all`` to
``strips``/``strips_all`` (the old names are gone in 5.0); in 5.0 F-curves live in an
action's channelbag (``action.fcurves`` is gone), and a video output needs
``image_settings.media_type = 'VIDEO'`` before ``file_format = 'FFMPEG'``. Other modules
call the functions below and never touch those names.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bpy

from . import timing

MAX_CHANNEL = 128
# Blender's FFmpeg container for each of the house's video suffixes (contract.VIDEO_SUFFIXES;
# a test holds the two to the same set).
VIDEO_CONTAINERS = {".mp4": "MPEG4", ".m4v": "MPEG4", ".mov": "QUICKTIME", ".mkv": "MKV", ".avi": "AVI",
                    ".webm": "WEBM"}
# Strip types whose pixels come straight from a file the worker can read.
FILE_KINDS = ("MOVIE", "IMAGE")

# ---------------------------------------------------------------------------------- strips


def strip_type() -> type:
    """``bpy.types.Strip`` (4.4+) or ``bpy.types.Sequence`` (4.2, 4.3)."""
    return getattr(bpy.types, "Strip", None) or bpy.types.Sequence


def editor(scene: Any, create: bool = False) -> Any:
    if scene.sequence_editor is None and create:
        scene.sequence_editor_create()
    return scene.sequence_editor


def children(owner: Any) -> Any:
    """The strips collection of a sequence editor or a meta strip (top level only)."""
    return owner.strips if hasattr(owner, "strips") else owner.sequences


def all_strips_attr() -> str:
    """Name of the editor's all-strips collection, e.g. for ``layout.prop_search``."""
    props = bpy.types.SequenceEditor.bl_rna.properties
    return "strips_all" if "strips_all" in props else "sequences_all"


def all_strips(scene: Any) -> list[Any]:
    ed = editor(scene)
    return [] if ed is None else list(getattr(ed, all_strips_attr()))


def find_strip(scene: Any, name: str) -> Any | None:
    ed = editor(scene)
    if ed is None or not name:
        return None
    return getattr(ed, all_strips_attr()).get(name)


def selected_strips(scene: Any) -> list[Any]:
    """Selected strips, in timeline order (channel, then start)."""
    strips = [s for s in all_strips(scene) if s.select]
    return sorted(strips, key=lambda s: (s.frame_final_start, s.channel))


def active_strip(scene: Any) -> Any | None:
    ed = editor(scene)
    return None if ed is None else ed.active_strip


def parent_meta(strip: Any) -> Any | None:
    getter = getattr(strip, "parent_meta", None)
    return getter() if getter is not None else None


def container(scene: Any, strip: Any) -> Any:
    """The collection holding ``strip``: its meta's strips, or the editor's top level."""
    meta = parent_meta(strip)
    return children(meta) if meta is not None else children(editor(scene))


def is_sound(strip: Any) -> bool:
    return strip.type == "SOUND"


def is_file_strip(strip: Any) -> bool:
    return strip.type in FILE_KINDS


def abspath(path: str, strip: Any) -> Path:
    library = getattr(strip.id_data, "library", None)
    return Path(os.path.normpath(bpy.path.abspath(path, library=library)))


def movie_path(strip: Any) -> Path:
    return abspath(strip.filepath, strip)


def image_directory(strip: Any) -> Path:
    return abspath(strip.directory, strip)


def image_files(strip: Any) -> list[str]:
    return [element.filename for element in strip.elements]


def media_size(strip: Any) -> tuple[int, int]:
    """Pixel size of a movie or image strip's media, (0, 0) if unknown."""
    elements = getattr(strip, "elements", None)
    if elements and len(elements) and elements[0].orig_width > 0:
        return int(elements[0].orig_width), int(elements[0].orig_height)
    if strip.type == "IMAGE" and elements and len(elements):
        path = image_directory(strip) / elements[0].filename
        if path.is_file():
            image = bpy.data.images.load(str(path), check_existing=True)
            try:
                return int(image.size[0]), int(image.size[1])
            finally:
                if image.users == 0:
                    bpy.data.images.remove(image)
    return 0, 0


def is_retimed(strip: Any) -> bool:
    """True when retiming keys change the speed (their content positions are not in RNA)."""
    keys = getattr(strip, "retiming_keys", None)
    return keys is not None and len(keys) > 1


def render_size(scene: Any) -> tuple[int, int]:
    r = scene.render
    return (max(1, r.resolution_x * r.resolution_percentage // 100),
            max(1, r.resolution_y * r.resolution_percentage // 100))


# ------------------------------------------------------------------------- frame mapping


def movie_timing(scene: Any, strip: Any) -> timing.StripTiming:
    """The timing numbers of a movie strip (without retiming)."""
    rate, length = _movie_playback(scene, strip)
    return timing.StripTiming(
        frame_start=float(strip.frame_start),
        final_start=int(strip.frame_final_start),
        final_end=int(strip.frame_final_end),
        content_length=length,
        duration=int(strip.frame_duration),
        playback_rate=rate,
        reverse=bool(strip.use_reverse_frames),
        strobe=float(strip.strobe),
        animation_offset_start=int(strip.animation_offset_start),
    )


def _movie_playback(scene: Any, strip: Any) -> tuple[float, int]:
    """``(media frames per timeline frame, content length in media frames)``.

    A movie added in the UI at a frame rate other than the scene's is played at its own
    speed (a flag RNA does not expose). Its length then follows the scene rate, so the
    flag shows by measuring the length at two scene rates; plain strips keep their length.
    """
    media_fps = float(getattr(strip, "fps", 0.0) or 0.0)
    r = scene.render
    scene_fps = r.fps / r.fps_base
    if media_fps <= 0 or abs(media_fps - scene_fps) < 1e-6:
        return 1.0, int(strip.frame_duration)
    saved = (r.fps, r.fps_base)
    lengths = []
    try:
        for multiple in (2, 3):
            target = multiple * media_fps
            r.fps = max(1, round(target))
            r.fps_base = r.fps / target
            lengths.append(int(strip.frame_duration))
    finally:
        r.fps, r.fps_base = saved
    if lengths[0] == lengths[1]:
        return 1.0, int(strip.frame_duration)
    # At twice the media rate the length is 2 * len, or one less after float truncation.
    return media_fps / scene_fps, (lengths[0] + 1) // 2


def image_frame_files(strip: Any) -> list[str]:
    """File name the image strip shows at each frame of its range (Blender's own lookup)."""
    names = []
    for frame in range(strip.frame_final_start, strip.frame_final_end):
        element = strip.strip_elem_from_frame(frame)
        names.append(element.filename if element is not None else strip.elements[-1].filename)
    return names


# ------------------------------------------------------------------------------ animation


def fcurve(scene: Any, data_path: str, index: int = 0) -> Any | None:
    """The scene's F-curve for ``data_path``, or None (strip properties animate on the scene)."""
    adt = scene.animation_data
    action = None if adt is None else adt.action
    if action is None:
        return None
    if hasattr(action, "layers") and hasattr(adt, "action_slot"):
        from bpy_extras import anim_utils  # 4.4+: slotted actions, the only way in 5.0

        getter = getattr(anim_utils, "action_get_channelbag_for_slot", None)
        if getter is not None:
            channelbag = getter(action, adt.action_slot)
            return None if channelbag is None else channelbag.fcurves.find(data_path, index=index)
    return action.fcurves.find(data_path, index=index)


def property_per_frame(scene: Any, strip: Any, prop: str, frames: Sequence[int]) -> list[float] | None:
    """Values of the strip's animated ``prop`` at ``frames``; None when it is not animated."""
    curve = fcurve(scene, strip.path_from_id(prop))
    if curve is None or curve.mute or not len(curve.keyframe_points):
        return None
    return [float(curve.evaluate(frame)) for frame in frames]


@contextmanager
def _muted_curve(scene: Any, strip: Any, prop: str) -> Iterator[None]:
    """Hold an animated strip property at the value set inside the block."""
    curve = fcurve(scene, strip.path_from_id(prop))
    was = None if curve is None else curve.mute
    if curve is not None:
        curve.mute = True
    try:
        yield
    finally:
        if curve is not None:
            curve.mute = was


# ---------------------------------------------------------------------------- rendering


@contextmanager
def _saved(obj: Any, *names: str) -> Iterator[None]:
    values = {name: getattr(obj, name) for name in names}
    try:
        yield
    finally:
        for name, value in values.items():
            # e.g. an enum whose item vanished with the setting that allowed it
            with contextlib.suppress(AttributeError, TypeError, ValueError):
                setattr(obj, name, value)


@contextmanager
def _neutral_png_output(scene: Any) -> Iterator[None]:
    """8-bit RGB PNG output with the Standard view, so frames keep the strip's own colours."""
    r, view = scene.render, scene.view_settings
    settings = r.image_settings
    with _saved(r, "filepath", "use_sequencer", "use_compositing", "use_file_extension"), \
            _saved(view, "view_transform", "look", "exposure", "gamma"), \
            _saved(settings, *_image_format_names(settings)):
        _set_image_format(settings, "PNG")
        settings.color_mode = "RGB"
        settings.color_depth = "8"
        r.use_sequencer = True
        r.use_compositing = False
        r.use_file_extension = True
        view.view_transform = "Standard"
        view.look = "None"
        view.exposure = 0.0
        view.gamma = 1.0
        yield


def _image_format_names(settings: Any) -> list[str]:
    names = ["file_format", "color_mode", "color_depth", "compression"]
    if hasattr(settings, "media_type"):
        names.insert(0, "media_type")
    return names


def _set_image_format(settings: Any, file_format: str) -> None:
    if hasattr(settings, "media_type"):  # 5.0+: images and videos are separate media types
        settings.media_type = "VIDEO" if file_format == "FFMPEG" else "IMAGE"
    settings.file_format = file_format


def render_strip_frames(scene: Any, strip: Any, folder: Path,
                        frames: Sequence[int] | None = None) -> Iterator[int]:
    """Render what ``strip`` shows, alone, at each of ``frames`` (default: its whole range).

    Writes ``folder/frame_000001.png`` onwards (one per frame, in order) and yields
    after each frame, so a modal operator can keep the UI alive between frames. Strips
    above it are muted and it is drawn with Replace at full opacity; everything is
    restored afterwards. Only top-level strips: inside a meta, stylize the meta.
    """
    if parent_meta(strip) is not None:
        raise ValueError(f"strip '{strip.name}' is inside a meta strip; stylize the meta strip instead")
    folder.mkdir(parents=True, exist_ok=True)
    needed = _effect_inputs(strip)
    above = [s for s in children(editor(scene))
             if s.channel > strip.channel and not s.mute and s.name not in needed]
    if frames is None:
        frames = range(strip.frame_final_start, strip.frame_final_end)
    current = scene.frame_current
    with _neutral_png_output(scene), _saved(strip, "blend_type", "blend_alpha"), \
            _muted_curve(scene, strip, "blend_alpha"):
        strip.blend_type = "REPLACE"
        strip.blend_alpha = 1.0
        for other in above:
            other.mute = True
        try:
            for number, frame in enumerate(frames, start=1):
                scene.frame_set(frame)
                scene.render.filepath = str(folder / f"frame_{number:06d}.png")
                bpy.ops.render.render(write_still=True, scene=scene.name)
                yield number
        finally:
            for other in above:
                other.mute = False
            scene.frame_set(current)


def _effect_inputs(strip: Any) -> set[str]:
    """Names of the strips an effect strip draws from, recursively (they must stay unmuted)."""
    names: set[str] = set()
    pending = [strip]
    while pending:
        current = pending.pop()
        for attr in ("input_1", "input_2"):
            source = getattr(current, attr, None)
            if source is not None and source.name not in names:
                names.add(source.name)
                pending.append(source)
    return names


@contextmanager
def _render_handler(on_frame: Callable[[int], None] | None) -> Iterator[None]:
    def handler(scene: Any, *_: Any) -> None:
        if on_frame is not None:
            on_frame(int(scene.frame_current))

    bpy.app.handlers.render_write.append(handler)
    try:
        yield
    finally:
        bpy.app.handlers.render_write.remove(handler)


def render_sequencer(scene: Any, output: str, frames: tuple[int, int] | None = None,
                     on_frame: Callable[[int], None] | None = None) -> Path:
    """Render the scene's sequencer to a video (by suffix) or to PNG frames.

    ``output`` is a video file, a folder (frames named ``frame_####.png``) or a path with
    ``#`` marks. ``frames`` is an inclusive timeline range; the scene's range by default.
    """
    r = scene.render
    settings = r.image_settings
    target = Path(output).expanduser().resolve()
    suffix = target.suffix.lower()
    with _saved(r, "filepath", "use_sequencer", "use_file_extension"), \
            _saved(scene, "frame_start", "frame_end"), \
            _saved(settings, *_image_format_names(settings)), \
            _saved(r.ffmpeg, "format", "codec", "constant_rate_factor", "audio_codec"), \
            _render_handler(on_frame):
        if frames is not None:
            scene.frame_start, scene.frame_end = frames
        r.use_sequencer = True
        if suffix in VIDEO_CONTAINERS:
            target.parent.mkdir(parents=True, exist_ok=True)
            _set_image_format(settings, "FFMPEG")
            r.ffmpeg.format = VIDEO_CONTAINERS[suffix]
            r.ffmpeg.codec = "WEBM" if suffix == ".webm" else "H264"
            r.ffmpeg.constant_rate_factor = "HIGH"
            has_sound = any(is_sound(s) and not s.mute for s in all_strips(scene))
            r.ffmpeg.audio_codec = ("OPUS" if suffix == ".webm" else "AAC") if has_sound else "NONE"
            r.use_file_extension = False
            r.filepath = str(target)
            bpy.ops.render.render(animation=True, scene=scene.name)
            return target
        _set_image_format(settings, "PNG")
        if "#" in target.name:
            target.parent.mkdir(parents=True, exist_ok=True)
            r.filepath = str(target)
            folder = target.parent
        else:
            target.mkdir(parents=True, exist_ok=True)
            r.filepath = str(target / "frame_####")
            folder = target
        r.use_file_extension = True
        bpy.ops.render.render(animation=True, scene=scene.name)
        return folder


# ---------------------------------------------------------------------------- results


def free_channel(strips: Any, above: int, start: int, end: int, ignore: Any = None) -> int:
    """Lowest channel above ``above`` with nothing in ``[start, end)``."""
    for channel in range(above + 1, MAX_CHANNEL + 1):
        if not any(
            s.channel == channel and s.frame_final_start < end and s.frame_final_end > start
            for s in strips if s != ignore
        ):
            return channel
    raise ValueError(f"no free channel above channel {above} for frames {start}-{end - 1}")


def place_image_strip(scene: Any, source: Any, existing: Any | None, name: str, directory: Path,
                      files: Sequence[str]) -> Any:
    """Create, or update in place, an image strip over ``source``'s frames showing ``files``."""
    strips = container(scene, source)
    start = int(source.frame_final_start)
    end = start + len(files)
    if existing is not None and existing.type == "IMAGE" and existing in list(strips):
        strip = existing
        strip.directory = str(directory) + os.sep
        while len(strip.elements) > len(files):
            strip.elements.pop(len(strip.elements) - 1)
        for element, filename in zip(strip.elements, files):
            element.filename = filename
        for filename in files[len(strip.elements):]:
            strip.elements.append(filename)
        strip.animation_offset_start = 0
        strip.animation_offset_end = 0
        strip.frame_offset_start = 0
        strip.frame_offset_end = 0
        strip.frame_start = start
        busy = any(s.channel == strip.channel and s.frame_final_start < end and s.frame_final_end > start
                   for s in strips if s != strip)
        if busy or strip.channel <= source.channel:
            strip.channel = free_channel(strips, source.channel, start, end, ignore=strip)
        strip.invalidate_cache("RAW")
    else:
        channel = free_channel(strips, source.channel, start, end)
        strip = strips.new_image(name=name[:63], filepath=str(directory / files[0]), channel=channel,
                                 frame_start=start)
        for filename in files[1:]:
            strip.elements.append(filename)
        strip.blend_type = "ALPHA_OVER"
    return strip


def match_geometry(result: Any, source: Any | None, shown_size: tuple[int, int],
                   result_size: tuple[int, int]) -> None:
    """Make ``result`` cover what ``source`` covers on screen.

    ``shown_size`` is the pixel size the source is drawn from (its media, or the render
    size for a rendered strip, which then has no transform of its own: ``source=None``).
    """
    if result_size[0] <= 0 or result_size[1] <= 0 or shown_size[0] <= 0 or shown_size[1] <= 0:
        return
    fx = shown_size[0] / result_size[0]
    fy = shown_size[1] / result_size[1]
    t = result.transform
    if source is None:
        t.offset_x = t.offset_y = t.rotation = 0.0
        t.scale_x, t.scale_y = fx, fy
        return
    s = source.transform
    t.offset_x, t.offset_y, t.rotation = s.offset_x, s.offset_y, s.rotation
    t.scale_x, t.scale_y = s.scale_x * fx, s.scale_y * fy
    if hasattr(t, "origin"):
        t.origin = tuple(s.origin)
    t.filter = s.filter
    result.use_flip_x, result.use_flip_y = source.use_flip_x, source.use_flip_y
    crop, src = result.crop, source.crop
    crop.min_x, crop.max_x = round(src.min_x / fx), round(src.max_x / fx)
    crop.min_y, crop.max_y = round(src.min_y / fy), round(src.max_y / fy)


def select_only(scene: Any, strip: Any) -> None:
    for other in all_strips(scene):
        other.select = False
    strip.select = True
    editor(scene).active_strip = strip


def new_effect(strips: Any, name: str, effect: str, channel: int, start: int, length: int, **inputs: Any) -> Any:
    """``strips.new_effect`` across versions (5.0 takes ``length``, before ``frame_end``)."""
    collection = getattr(bpy.types, "StripsTopLevel", None) or bpy.types.SequencesTopLevel
    if "length" in collection.bl_rna.functions["new_effect"].parameters:
        return strips.new_effect(name=name, type=effect, channel=channel, frame_start=start, length=length, **inputs)
    return strips.new_effect(name=name, type=effect, channel=channel, frame_start=start,
                             frame_end=start + length, **inputs)
