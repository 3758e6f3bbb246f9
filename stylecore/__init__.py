"""Stylecore: temporally stable neural style transfer for video.

Python API::

    import stylecore
    stylecore.stylize("clip.mp4", "out.mp4", style="starry_night.jpg", size=384)
    stylecore.stylize("clip.mp4", "out/")                      # shipped feedforward model
    stylecore.stylize("film.mp4", "out/", style="s.jpg", farm="auto", chunk=48)  # a Ray cluster

``stylize`` accepts every ``stylecore.jobspec.JobSpec`` field as a keyword; ``run_job``
with a ``JobSpec`` gives progress events and cancellation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # the heavy modules (torch) load only when a job runs
    from stylecore.pipeline import JobResult

__all__ = ["__version__", "stylize"]


def stylize(
    content: str,
    output: str,
    *,
    style: str | Sequence[str | tuple[str, float]] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> JobResult:
    """Stylize ``content`` into ``output`` (a PNG folder or a video file).

    ``style`` is an image path, or several as paths / ``(path, weight)`` pairs. The mode
    defaults like the CLI's (``jobspec.guess_mode``): style-video with ``style_video``,
    feedforward with ``model``, optimization with a style, otherwise the default
    feedforward model.
    """
    from stylecore.jobspec import JobSpec, guess_mode
    from stylecore.pipeline import run_job

    styles: tuple[tuple[str, float], ...] = ()
    if isinstance(style, str):
        styles = ((style, 1.0),)
    elif style:
        styles = tuple((s, 1.0) if isinstance(s, str) else (str(s[0]), float(s[1])) for s in style)
    if "mode" not in options:
        options["mode"] = guess_mode(styles, options.get("style_video"), options.get("model"))
    spec = JobSpec(content=str(content), output=str(output), styles=styles, **options)
    return run_job(spec, on_event, overwrite=overwrite)
