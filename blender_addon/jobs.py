"""From a strip and its settings to a worker job, and from finished frames to a result strip.

A job's output folder is named by a hash of everything that decides its pixels (the job
fields and the size and time stamps of its input files), so re-running the same job
resumes in the same folder, and changed settings start a new folder instead of
clashing with the old frames. The engine identifies the inputs itself too (the job
fingerprint), so frames of a changed input are never taken as done even where this
hash would miss it; the hash here only picks folders and tells stale results.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import contract, props, timing, vse
from .contract import FRAME_NAME, IMAGE_EXTENSIONS, UNHASHED_FIELDS


def _by_identifier(names: tuple[str, ...]) -> dict[str, str]:
    """The engine's names keyed by the identifiers of the panel's choices (HED_VGG16: hed-vgg16)."""
    return {name.upper().replace("-", "_"): name for name in names}


MODES = _by_identifier(contract.MODES)
PRESERVE = _by_identifier(contract.PRESERVE_COLORS)
DEVICES = {"AUTO": "auto", "CPU": "cpu", "CUDA": "cuda", "MPS": "mps"}
LOSS_NETS = _by_identifier(contract.LOSS_NETS)
# Job fields the add-on owns: extra options from the preferences may not override them.
_OWNED_FIELDS = frozenset({"content", "output", "frame_map", "frames"})
_OWNED_TRAIN_FIELDS = frozenset({"style", "output", "content", "restart", "quality"})
QUALITY = {"DRAFT": "draft", "GOOD": "good", "BEST": "best"}


class StylizeError(Exception):
    """A strip cannot be stylized as set up; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    """The add-on preferences that a job needs, resolved to plain values."""

    worker_python: str = ""  # as set in the preferences; empty = detect
    device: str = "auto"
    output_root: Path = Path("stylized")
    job_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)


def parse_job_options(text: str, field_name: str = "Extra Job Options") -> dict[str, Any]:
    """The preferences' extra job (or training) options: a JSON object, or empty."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StylizeError(f"{field_name} in the add-on's preferences is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise StylizeError(f'{field_name} in the add-on\'s preferences must be a JSON object like {{"size": 192}}')
    owned = sorted(set(value) & (_OWNED_FIELDS if field_name == "Extra Job Options" else _OWNED_TRAIN_FIELDS))
    if owned:
        raise StylizeError(f"{field_name} may not set {', '.join(owned)}: the add-on computes them")
    return value


@dataclass
class Plan:
    """One strip's job: what to send, where frames go, and what to render first."""

    source_name: str
    uid: str
    job: dict[str, Any]
    base: Path  # the strip's folder under the output root
    frame_count: int
    preview: bool
    shown_size: tuple[int, int]  # pixel size the source is drawn from (media, or render size)
    render_frames: list[int] | None = None  # timeline frames to render first (non-file strips)
    render_folder: Path | None = None
    stamp: str = ""  # hash of the job's inputs; complete once rendering is done
    folder: Path | None = None
    # The strip's id was made just now (never saved): a folder of the same strip and job
    # from before a crash is adopted instead of starting over.
    fresh_uid: bool = False

    @property
    def rendered(self) -> bool:
        return self.render_frames is not None

    @property
    def job_hash(self) -> str:
        return self.stamp[:16]

    def finalize(self) -> None:
        """Fix the output folder (after rendering, whose pixels are part of the hash)."""
        stamp = _stamp_fields(self.job, content_files=self.render_folder is None)
        if self.render_folder is not None:
            stamp["rendered"] = _folder_digest(self.render_folder)
        self.stamp = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()
        kind = "preview" if self.preview else "job"
        self.folder = self.base / f"{kind}-{self.job_hash}"
        if self.fresh_uid and not self.folder.exists():
            prefix = self.base.name[: -len(self.uid[:6])]  # "<strip>-"
            earlier = sorted(self.base.parent.glob(f"{glob_escape(prefix)}*/{kind}-{self.job_hash}"))
            if earlier:
                self.base = earlier[0].parent
                self.uid = self.base.name[len(prefix):]
                self.folder = earlier[0]
        self.job["output"] = str(self.folder)


# ---------------------------------------------------------------------------- planning


def source_of(scene: Any, strip: Any) -> Any:
    """The strip to stylize: ``strip`` itself, or the source of a result strip."""
    settings = props.strip_settings(strip)
    if not settings.is_result:
        return strip
    for other in vse.all_strips(scene):
        other_settings = props.strip_settings(other)
        if not other_settings.is_result and other_settings.uid == settings.source_uid:
            return other
    named = vse.find_strip(scene, settings.source_name)
    if named is not None and not props.strip_settings(named).is_result:
        return named
    raise StylizeError(f"'{strip.name}' is a stylized result whose source strip '{settings.source_name}' is gone")


def find_result(scene: Any, source: Any) -> Any | None:
    uid = props.strip_settings(source).uid
    if not uid:
        return None
    matches = [s for s in vse.all_strips(scene)
               if props.strip_settings(s).is_result and props.strip_settings(s).source_uid == uid]
    matches.sort(key=lambda s: props.strip_settings(s).source_name != source.name)
    return matches[0] if matches else None


def ensure_uid(scene: Any, strip: Any) -> str:
    """A stable id for ``strip``; a duplicated strip (Shift+D copies it) gets its own."""
    settings = props.strip_settings(strip)
    clash = settings.uid and any(
        other != strip and not props.strip_settings(other).is_result and props.strip_settings(other).uid == settings.uid
        for other in vse.all_strips(scene)
    )
    if clash:
        result = find_result(scene, strip)
        owner = result is not None and props.strip_settings(result).source_name == strip.name
        if not owner:
            settings.uid = ""
    if not settings.uid:
        settings.uid = uuid.uuid4().hex[:12]
    return settings.uid


def check_stylizable(strip: Any) -> None:
    """Raise ``StylizeError`` for strips that cannot be stylized, saying why."""
    if vse.is_sound(strip):
        raise StylizeError(f"'{strip.name}' is a sound strip: only visual strips (movie, image, scene, meta, "
                           "effect) can be stylized")
    if strip.type == "MOVIE":
        path = vse.movie_path(strip)
        if not path.is_file():
            raise StylizeError(f"the movie of strip '{strip.name}' is missing: {path}; relink it "
                               "(Strip > Movie Strip > Change Path) or remove the strip")
    elif strip.type == "IMAGE":
        folder = vse.image_directory(strip)
        missing = [name for name in vse.image_files(strip) if not (folder / name).is_file()]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise StylizeError(f"image strip '{strip.name}' is missing {folder / missing[0]}{more}; "
                               "relink its folder or remove the strip")


def plan_strip(scene: Any, strip: Any, settings: Settings, *, preview_frame: int | None = None) -> Plan:
    """Build the job for ``strip`` (or, for a result strip, for its source)."""
    source = source_of(scene, strip)
    check_stylizable(source)
    st = props.strip_settings(source)
    old_uid = st.uid
    uid = ensure_uid(scene, source)
    start, end = int(source.frame_final_start), int(source.frame_final_end)
    if end <= start:
        raise StylizeError(f"strip '{source.name}' has no frames")
    frames = list(range(start, end))
    if preview_frame is not None:
        if not start <= preview_frame < end:
            raise StylizeError(f"the current frame {preview_frame} is outside strip '{source.name}' "
                               f"({start}-{end - 1}); move the playhead over it to preview")
        frames = [preview_frame]
    base = settings.output_root / f"{_safe_name(source.name)}-{uid[:6]}"
    job: dict[str, Any] = {}
    render_frames = None
    render_folder = None
    content, frame_map = _file_content(scene, source, frames)
    if content is None:
        render_frames = frames
        render_folder = base / ("preview-render" if preview_frame is not None else "render")
        content, frame_map = str(render_folder), list(range(len(frames)))
        shown = vse.render_size(scene)
    else:
        shown = vse.media_size(source)
    job["content"] = content
    job["frame_map"] = frame_map
    job.update(_style_fields(scene, source, st, frames))
    job["device"] = settings.device
    job.update(settings.job_options)
    plan = Plan(source_name=source.name, uid=uid, job=job, base=base, frame_count=len(frames),
                preview=preview_frame is not None, shown_size=shown, render_frames=render_frames,
                render_folder=render_folder, fresh_uid=uid != old_uid)
    if not plan.rendered:
        plan.finalize()
        st.uid = plan.uid  # possibly the id of the folder adopted from before a crash
    return plan


def glob_escape(text: str) -> str:
    """``text`` matched literally in a glob pattern."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _file_content(scene: Any, strip: Any, frames: list[int]) -> tuple[str | None, list[int]]:
    """(content path, source index per frame) for strips read from files; (None, []) otherwise."""
    offset = int(strip.frame_final_start)
    if strip.type == "MOVIE" and not vse.is_retimed(strip):
        full = timing.frame_map(vse.movie_timing(scene, strip))
        return str(vse.movie_path(strip)), [full[f - offset] for f in frames]
    if strip.type == "IMAGE":
        folder = vse.image_directory(strip)
        names = vse.image_frame_files(strip)
        shown = [names[f - offset] for f in frames]
        if len(strip.elements) == 1:
            return str(folder / strip.elements[0].filename), [0] * len(frames)
        order = worker_folder_order(folder)
        position = {name: i for i, name in enumerate(order)}
        missing = [name for name in shown if name not in position]
        if missing:
            raise StylizeError(f"image strip '{strip.name}' shows {missing[0]}, which stylecore would not read "
                               f"from {folder} (hidden, or not a {'/'.join(sorted(IMAGE_EXTENSIONS))} file)")
        return str(folder), [position[name] for name in shown]
    return None, []


def worker_folder_order(folder: Path) -> list[str]:
    """Image names in ``folder`` in the order stylecore reads them (index = position)."""
    names = [p.name for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(names, key=timing.natural_key)


def _style_fields(scene: Any, source: Any, st: Any, frames: list[int]) -> dict[str, Any]:
    mode = MODES[st.mode]
    fields: dict[str, Any] = {
        "mode": mode,
        "temporal_weight": float(st.temporal_weight),
        "preserve_colors": PRESERVE[st.preserve_colors],
        "size": int(st.size) or None,
    }
    weights = vse.property_per_frame(scene, source, props.STYLE_WEIGHT, frames)
    if weights is None:
        fields["style_weight"] = props.style_weight(source)
    else:
        fields["style_weights"] = [round(max(w, 0.0), 6) for w in weights]
    if mode == "feedforward":
        model = st.model.strip()
        if model and _is_model_path(model):
            path = vse.abspath(model, source)
            if not path.is_file():
                raise StylizeError(f"the model file of strip '{source.name}' does not exist: {path}")
            fields["model"] = str(path)
        elif model:
            fields["model"] = model  # a model name: the worker's catalog resolves it
        elif _has_style(st):
            # The style image chooses the model: the worker uses the one trained on it, or
            # says that there is none (then the panel offers Train Style).
            fields["styles"] = [[_style_path(scene, source, st, video=False), 1.0]]
        return fields
    fields["iterations"] = int(st.iterations)
    fields["loss_net"] = LOSS_NETS[st.loss_net]
    style = _style_path(scene, source, st, video=mode == "style-video")
    if mode == "style-video":
        fields["style_video"] = style
    else:
        fields["styles"] = [[style, 1.0]]
    return fields


def _is_model_path(text: str) -> bool:
    return text.startswith("//") or text.endswith(".safetensors") or "/" in text or "\\" in text


def _has_style(st: Any) -> bool:
    return bool(st.style_strip.strip()) if st.style_source == "STRIP" else bool(st.style_image.strip())


def style_image_path(scene: Any, strip: Any) -> str:
    """The style image set on ``strip`` (for Train Style); raises ``StylizeError`` if none."""
    source = source_of(scene, strip)
    st = props.strip_settings(source)
    if not _has_style(st):
        raise StylizeError(f"strip '{source.name}': choose a Style Image to train a model for")
    return _style_path(scene, source, st, video=False)


def model_name_for(style: str) -> str:
    """The model name Train Style gives a style image (``The Scream.jpg`` -> ``the_scream``)."""
    return re.sub(r"[^\w.-]+", "_", Path(style).stem).strip("._").lower() or "style"


def plan_training(scene: Any, strip: Any, settings: Settings) -> dict[str, Any]:
    """The worker's ``train`` job for the style image of ``strip`` (docs/worker-protocol.md)."""
    source = source_of(scene, strip)
    st = props.strip_settings(source)
    style = style_image_path(scene, source)
    job: dict[str, Any] = {"style": style, "output": model_name_for(style), "quality": QUALITY[st.train_quality],
                           "restart": bool(st.train_start_over), "device": settings.device}
    if st.train_own_frames:
        check_stylizable(source)
        if source.type == "MOVIE":
            job["content"] = [str(vse.movie_path(source))]
        elif source.type == "IMAGE":
            folder = vse.image_directory(source)
            job["content"] = [str(folder if len(source.elements) > 1 else folder / source.elements[0].filename)]
        else:
            raise StylizeError(f"strip '{source.name}' is a {source.type.lower()} strip, whose frames are not in a "
                               "file: untick Train on This Strip, or train on a movie or image strip")
    job.update(settings.train_options)
    return job


def _style_path(scene: Any, source: Any, st: Any, *, video: bool) -> str:
    what = "style video" if video else "style image"
    if st.style_source == "STRIP":
        other = vse.find_strip(scene, st.style_strip)
        if other is None:
            raise StylizeError(f"strip '{source.name}': choose the strip that holds the {what}")
        if other.type == "MOVIE":
            if not video:
                raise StylizeError(f"style strip '{other.name}' is a movie: use Style Video mode, or an image strip")
            path = vse.movie_path(other)
        elif other.type == "IMAGE":
            folder = vse.image_directory(other)
            path = folder if video and len(other.elements) > 1 else folder / other.elements[0].filename
        else:
            raise StylizeError(f"style strip '{other.name}' is not a movie or image strip")
    else:
        if not st.style_image.strip():
            raise StylizeError(f"strip '{source.name}': set a {what} in the Stylize panel, or use the "
                               "Feedforward Model mode")
        path = vse.abspath(st.style_image, source)
    if not path.exists():
        raise StylizeError(f"the {what} of strip '{source.name}' does not exist: {path}")
    return str(path)


# ---------------------------------------------------------------------------- results


def result_name(source_name: str) -> str:
    return f"{source_name} Stylized"


def frame_files(count: int) -> list[str]:
    return [FRAME_NAME.format(n) for n in range(1, count + 1)]


def is_complete(folder: Path, count: int) -> bool:
    return all((folder / name).is_file() for name in frame_files(count))


def apply_result(scene: Any, plan: Plan) -> Any:
    """Create or update the source's result strip to show the finished frames."""
    assert plan.folder is not None
    source = vse.find_strip(scene, plan.source_name)
    if source is None:
        raise StylizeError(f"strip '{plan.source_name}' was deleted while it was being stylized")
    files = frame_files(plan.frame_count)
    existing = find_result(scene, source)
    result = vse.place_image_strip(scene, source, existing, result_name(source.name), plan.folder, files)
    props.strip_settings(source).uid = plan.uid
    st = props.strip_settings(result)
    st.is_result = True
    st.source_uid = plan.uid
    st.source_name = source.name
    st.output_dir = str(plan.folder)
    st.job_hash = plan.job_hash
    props.strip_settings(source).batch = True
    # Always re-matched: the source may have moved, or the processing size changed.
    vse.match_geometry(result, None if plan.rendered else source, plan.shown_size, png_size(plan.folder / files[0]))
    return result


def is_stale(scene: Any, source: Any, settings: Settings) -> bool:
    """True when the source's result is missing, made with other settings, or incomplete.

    Rendered sources (meta, scene, effect strips) count as stale: only rendering them
    again shows whether they changed (the job then resumes if they did not).
    """
    result = find_result(scene, source)
    if result is None:
        return True
    plan = plan_strip(scene, source, settings)
    if plan.rendered:
        return True
    assert plan.folder is not None
    return props.strip_settings(result).job_hash != plan.job_hash or not is_complete(plan.folder, plan.frame_count)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG header; (0, 0) if the file is not a readable PNG."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError:
        return 0, 0
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return 0, 0
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


# ---------------------------------------------------------------------------- hashing


def _stamp_fields(job: dict[str, Any], *, content_files: bool) -> dict[str, Any]:
    """The job's pixel-deciding fields plus the size and mtime of each input file.

    ``content_files=False`` leaves out the content's stamp (a rendered source is
    rewritten on every run; the digest of its pixels stands in for it).
    """
    fields = {k: v for k, v in job.items() if k not in UNHASHED_FIELDS}
    paths = [job.get("content") if content_files else None, job.get("model"), job.get("style_video")]
    paths += [p for p, _ in job.get("styles") or ()]
    fields["inputs"] = {str(p): _file_stamp(Path(p)) for p in paths if p}
    return fields


def _file_stamp(path: Path) -> list[int]:
    """Size and modification time of a file; for a folder, of its newest image."""
    try:
        if path.is_dir():
            stats = [p.stat() for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
            return [len(stats), max((s.st_mtime_ns for s in stats), default=0)]
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]
    except OSError:
        return [0, 0]


def _folder_digest(folder: Path) -> str:
    """Hash of the bytes of a folder's frames (a re-render that changed nothing hashes alike)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("frame_*.png")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "strip"
