"""Process-level CPU settings of stylecore.devices, checked in fresh processes."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

# Three rounds of writing and freeing 64 MB, then the same after reuse_freed_memory: the
# fewest page faults a round took, before and after.
_ROUNDS = """
import resource, torch
from stylecore.devices import reuse_freed_memory

def fewest_faults():
    counts = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.ones(64 * 2**20 // 4)
        del block
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return min(counts)

first = fewest_faults()
reuse_freed_memory(torch.device("cpu"))
print(first, fewest_faults())
"""


def _is_glibc() -> bool:
    try:
        ctypes.CDLL("libc.so.6").gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return True


def _faults(**env: str) -> tuple[int, int]:
    run = subprocess.run([sys.executable, "-c", _ROUNDS], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=120, check=True)
    before, after = run.stdout.split()
    return int(before), int(after)


@pytest.mark.skipif(not _is_glibc(), reason="the freed-memory setting is glibc's (Linux); elsewhere it does nothing")
def test_freed_blocks_are_reused_not_faulted_in_again() -> None:
    """A 64 MB block freed and allocated again must not be mapped and zero-filled again
    (16384 page faults of 4 KiB) once a CPU job has tuned the allocator; a user's own
    malloc setting is left alone."""
    before, after = _faults()
    assert before > 10_000 and after < 100
    before, after = _faults(MALLOC_MMAP_THRESHOLD_="131072")
    assert before > 10_000 and after > 10_000
