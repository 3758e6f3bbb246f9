"""One timed feedforward job in a fresh process: ``python -m bench.ff_child JOB_JSON``.

Prints ``{"seconds": ..., "frames": ..., "cuda_peak_bytes": ...}`` on stdout. The parent
reads this process's own peak RSS from ``wait4``, so the job runs alone in it.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    import torch

    from stylecore.jobspec import JobSpec
    from stylecore.pipeline import run_job

    spec = JobSpec.from_dict(json.loads(argv[0]))
    start = time.perf_counter()
    result = run_job(spec, overwrite=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    cuda_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    print(json.dumps({"seconds": seconds, "frames": result.frames, "cuda_peak_bytes": cuda_peak}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
