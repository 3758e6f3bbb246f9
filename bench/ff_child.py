"""One timed feedforward job in a fresh process: ``python -m bench.ff_child JOB_JSON``.

Prints ``{"seconds": ..., "first_frame_s": ..., "frames": ..., "cuda_peak_bytes": ...,
"vm_hwm_bytes": ...}`` on stdout (``first_frame_s``: from the job's start to its first
written frame, model load and any compilation included): the job runs alone in this process, so its peak RSS (``VmHWM``) is the job's.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    import torch

    from bench.common import vm_hwm_bytes
    from stylecore.jobspec import JobSpec
    from stylecore.pipeline import run_job

    spec = JobSpec.from_dict(json.loads(argv[0]))
    start = time.perf_counter()
    first: list[float] = []

    def on_event(event: dict[str, object]) -> None:
        if event.get("event") == "frame" and not first:
            first.append(time.perf_counter() - start)

    result = run_job(spec, on_event, overwrite=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    cuda_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    figures = {"seconds": seconds, "first_frame_s": first[0] if first else None, "frames": result.frames, "cuda_peak_bytes": cuda_peak, "vm_hwm_bytes": vm_hwm_bytes()}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
