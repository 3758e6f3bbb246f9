"""The training progress bar: tqdm fed by training events (steps, loss terms, time left)."""

from __future__ import annotations

import sys
from typing import Any


class TrainingBar:
    """Call it with training events; ``log`` prints above the bar without breaking it."""

    def __init__(self, *, disabled: bool | None = None) -> None:
        # By default a bar only on a terminal; log files get the periodic log lines.
        self._disabled = not sys.stderr.isatty() if disabled is None else disabled
        self._bar: Any = None
        self.preview: str | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start" and not self._disabled:
            from tqdm import tqdm

            self._bar = tqdm(total=event["steps"], initial=event["step"], unit="step", dynamic_ncols=True,
                             file=sys.stderr, mininterval=0.5)
        elif kind == "step" and self._bar is not None:
            losses = event.get("losses", {})
            self._bar.set_postfix_str("  ".join(f"{k} {v:.3g}" for k, v in losses.items()), refresh=False)
            self._bar.update(event["step"] - self._bar.n)
        elif kind == "preview":
            self.preview = str(event["path"])
        elif kind == "done":
            self.close()

    def log(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
