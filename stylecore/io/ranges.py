"""Frame ranges: ``START:END`` as the user writes it, and the source indices it selects."""

from __future__ import annotations

import re

from stylecore.errors import InputError


def parse_frame_range(text: str) -> tuple[int, int]:
    """``"START:END"`` (0-based, END exclusive) -> ``(start, end)``; ``"START:"`` gives end ``-1``."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d*)\s*", text or "")
    if not m:
        raise InputError(f"`frames` {text!r} is not START:END (0-based, END exclusive), e.g. 0:48 or 24:")
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else -1
    if end != -1 and end <= start:
        raise InputError(
            f"`frames` {start}:{end} selects no frame; END is exclusive and must be larger than START "
            f"(e.g. `frames` {start}:{start + 1})"
        )
    return start, end


def resolve_range(rng: tuple[int, int] | None, count: int) -> range:
    """The source indices a range selects; ``None`` = all, ``end == -1`` or past the end = to the end."""
    if rng is None:
        return range(count)
    start, end = rng
    if start >= count:
        raise InputError(
            f"`frames` {start}:{'' if end == -1 else end} starts after the last frame; "
            f"the source has {count} frames (0..{count - 1})"
        )
    stop = count if end == -1 else min(end, count)
    return range(start, stop)
