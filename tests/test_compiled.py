"""The compiled network kept between runs (``nets.compiled.PrecompiledNetwork``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from stylecore.modes.feedforward import has_cpp_compiler
from stylecore.nets import compiled as nets_compiled
from stylecore.nets.compiled import PrecompiledNetwork, file_name
from stylecore.nets.transformer import StyleTransformer, TransformerConfig

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not has_cpp_compiler(), reason="inductor needs a C++ compiler")]


def _network(seed: int) -> StyleTransformer:
    torch.manual_seed(seed)
    model = StyleTransformer(TransformerConfig(res_blocks=1)).eval().requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _inputs(height: int = 24, width: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    return image, torch.tensor([0.7])


def _eager(model: StyleTransformer, image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(image, weight)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the function compiled for ``_network(0)`` at 40x24 (compiled once
    for the module: a compilation takes seconds)."""
    folder = tmp_path_factory.mktemp("compiled")
    network = PrecompiledNetwork(_network(0), folder)
    image, weight = _inputs()
    with torch.inference_mode():  # inference tensors, as the stylizer's; later runs call with ordinary ones
        out = network(image.clone(), weight.clone())
    assert network.saved == [folder / file_name(network.model, image, weight)] and not network.loaded
    torch.testing.assert_close(out, _eager(network.model, image, weight), atol=1e-4, rtol=1e-4)
    return folder


def test_a_later_run_loads_the_compiled_network_and_its_weights_are_inputs(built: Path) -> None:
    """A second network object (as in a new process) loads the saved file instead of
    compiling, and another model of the same architecture shares it: its own weights are
    used, not those it was compiled with."""
    other = _network(7)
    network = PrecompiledNetwork(other, built)
    image, weight = _inputs()
    out = network(image, weight)
    assert network.loaded == [built / file_name(other, image, weight)] and not network.saved
    expected = _eager(other, image, weight)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    assert (out - _eager(_network(0), image, weight)).abs().max() > 1e-2  # the weights do matter


def test_a_later_process_loads_it_without_importing_the_compiler(built: Path) -> None:
    """What makes a later job start fast: loading the kept file goes through torch's C++
    runner, and neither dynamo nor inductor (1.3 s to import) is imported."""
    script = f"""
import sys, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_compiled import _eager, _inputs, _network
from stylecore.nets.compiled import PrecompiledNetwork
network = PrecompiledNetwork(_network(0), __import__("pathlib").Path({str(built)!r}))
image, weight = _inputs()
with torch.inference_mode():
    out = network(image, weight)
torch.testing.assert_close(out, _eager(network.model, image, weight), atol=1e-4, rtol=1e-4)
assert len(network.loaded) == 1 and not network.saved, (network.loaded, network.saved)
print(sorted(m for m in sys.modules if m.startswith(("torch._inductor", "torch._dynamo"))))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_another_size_is_another_file() -> None:
    """The file's name follows the input's shape, dtype and layout, and the network's shape."""
    model = _network(0)
    image, weight = _inputs()
    names = {
        file_name(model, image, weight),
        file_name(model, *_inputs(32, 40)),
        file_name(model, image.to(torch.bfloat16), weight),
        file_name(model, image.contiguous(memory_format=torch.channels_last), weight),
        file_name(model, image, torch.tensor([0.7, 0.8])),
        file_name(StyleTransformer(TransformerConfig(res_blocks=2)), image, weight),
    }
    assert len(names) == 6
    assert file_name(_network(3), image, weight) == file_name(model, image, weight)  # weights are not in it
    threads = torch.get_num_threads()
    try:  # inductor's kernels specialise on the thread count: another count is another file
        torch.set_num_threads(threads + 1)
        assert file_name(model, image, weight) not in names
    finally:
        torch.set_num_threads(threads)


def test_a_damaged_file_is_compiled_again(built: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file that does not load (cut short, from another build) is replaced, with a warning;
    building clears files unused for ``UNUSED_DAYS``, and loading a file marks it used."""
    model = _network(0)
    image, weight = _inputs()
    path = tmp_path / file_name(model, image, weight)
    path.write_bytes((built / path.name).read_bytes()[:1000])
    # Kept files of other builds: one unused for longer than UNUSED_DAYS goes when a file is
    # built, and so does a file of the earlier format (torch's ``aot_compile``, ``.bin``).
    stale, recent = tmp_path / ("0" * 24 + nets_compiled.SUFFIX), tmp_path / ("1" * 24 + nets_compiled.SUFFIX)
    earlier = tmp_path / ("2" * 24 + ".bin")
    for other, days in ((stale, nets_compiled.UNUSED_DAYS + 1), (recent, nets_compiled.UNUSED_DAYS - 1), (earlier, 0)):
        other.write_bytes(b"from another torch")
        os.utime(other, (time.time() - days * 86400,) * 2)
    network = PrecompiledNetwork(model, tmp_path)
    with caplog.at_level(logging.WARNING, logger="stylecore.nets.compiled"):
        out = network(image, weight)
    assert "ignoring the precompiled network" in caplog.text
    assert network.saved == [path] and not network.loaded
    assert not stale.exists() and not earlier.exists() and recent.exists()
    torch.testing.assert_close(out, _eager(model, image, weight), atol=1e-4, rtol=1e-4)
    os.utime(path, (time.time() - 86400,) * 2)
    again = PrecompiledNetwork(model, tmp_path)
    again(image, weight)
    assert again.loaded == [path]  # the new file loads
    assert path.stat().st_mtime > time.time() - 3600  # and loading marks it as in use


def test_an_unwritable_cache_or_a_failing_compiler_still_runs_compiled(tmp_path: Path, built: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Where the file cannot be kept, the job runs compiled all the same; where the
    ahead-of-time compilation itself fails, it falls back to a plain ``torch.compile``."""
    model = _network(0)
    image, weight = _inputs()
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    network = PrecompiledNetwork(model, blocked)
    with caplog.at_level(logging.WARNING, logger="stylecore.nets.compiled"):
        out = network(image, weight)
    assert "cannot keep the compiled network" in caplog.text and not network.saved
    torch.testing.assert_close(out, _eager(model, image, weight), atol=1e-4, rtol=1e-4)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("aot_compile moved")

    monkeypatch.setattr(PrecompiledNetwork, "_build", broken)
    plain: list[object] = []
    real_compile = torch.compile
    monkeypatch.setattr(nets_compiled.torch, "compile", lambda m, **k: plain.append(m) or real_compile(m, **k))
    network = PrecompiledNetwork(model, tmp_path / "empty")
    out = network(image, weight)
    assert plain == [model] and not network.saved
    torch.testing.assert_close(out, _eager(model, image, weight), atol=1e-4, rtol=1e-4)


def _count_builds_and_compiles(monkeypatch: pytest.MonkeyPatch, build_error: Exception | None,
                               compile_error: Exception | None) -> tuple[list[int], list[int]]:
    """Replace the package's build with a stand-in that always fails (with ``build_error``,
    else a C++ compile error) and ``torch.compile`` with one whose network fails with
    ``compile_error`` (None: it runs the model eagerly); returns their call logs."""
    builds: list[int] = []
    compiles: list[int] = []

    def build(*args: object) -> None:
        builds.append(1)
        raise build_error or RuntimeError("CppCompileError: C++ compile error")

    def fake_compile(model: torch.nn.Module, **kwargs: object) -> Any:
        compiles.append(1)

        def run(image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            if compile_error is not None:
                raise compile_error
            return model(image, weight)
        return run

    monkeypatch.setattr(PrecompiledNetwork, "_build", build)
    monkeypatch.setattr(nets_compiled.torch, "compile", fake_compile)
    return builds, compiles


def test_a_failed_build_is_not_tried_again_by_the_next_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build that failed (an export or a C++ compiler that cannot handle the network)
    would fail again: later jobs go straight to torch.compile for a day, then try again."""
    model = _network(0)
    image, weight = _inputs()
    builds, compiles = _count_builds_and_compiles(monkeypatch, None, None)
    expected = _eager(model, image, weight)
    for _ in range(2):
        torch.testing.assert_close(PrecompiledNetwork(model, tmp_path)(image, weight), expected)
    assert builds == [1] and compiles == [1, 1]
    marker = (tmp_path / file_name(model, image, weight)).with_suffix(nets_compiled.FAILED)
    assert "C++ compile error" in marker.read_text()
    day_ago = time.time() - nets_compiled.RETRY_HOURS * 3600 - 60
    os.utime(marker, (day_ago, day_ago))
    PrecompiledNetwork(model, tmp_path)(image, weight)
    assert builds == [1, 1]


def test_a_failed_torch_compile_is_not_tried_again_by_the_next_jobs(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Where torch.compile fails as well (no working compiler), a later job's network fails
    at once, naming the cause and the marker, so that the caller runs eager without
    spending a build and a compilation first (in the same worker or a new process)."""
    model = _network(0)
    image, weight = _inputs()
    builds, compiles = _count_builds_and_compiles(
        monkeypatch, None, RuntimeError("InductorError: CppCompileError: cannot find cc1plus"))
    network = PrecompiledNetwork(model, tmp_path)
    with pytest.raises(RuntimeError, match="cannot find cc1plus"):
        network(image, weight)
    remembered = (r"torch.compile: .*cannot find cc1plus; remembered in .*\.failed for 24 h, "
                  r"delete it to try again")
    for again in (network, PrecompiledNetwork(model, tmp_path)):  # the worker's next job, a new process's
        with pytest.raises(RuntimeError, match=remembered):
            again(image, weight)
    assert builds == [1] and compiles == [1]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), MemoryError(),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory")])
def test_a_lack_of_memory_or_disk_is_not_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    error: Exception) -> None:
    """A build or a compilation that ran out of memory or disk may well work next time."""
    model = _network(0)
    image, weight = _inputs()
    builds, compiles = _count_builds_and_compiles(monkeypatch, error, error)
    for _ in range(2):
        with pytest.raises(type(error)):
            PrecompiledNetwork(model, tmp_path)(image, weight)
    assert builds == [1, 1] and compiles == [1, 1]
    assert not list(tmp_path.glob("*" + nets_compiled.FAILED))


def test_a_package_that_does_not_load_here_is_not_built_again(tmp_path: Path, built: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Where a package built here cannot load (the runner unpacks its library into the
    temporary folder, which may be mounted noexec), the job runs a plain ``torch.compile``,
    says how to fix it, and later jobs go straight to ``torch.compile`` instead of
    spending a build each on a package that will not load."""
    model = _network(0)
    image, weight = _inputs()
    real_open = nets_compiled._open

    def refuse(path: Path) -> Any:
        raise RuntimeError("failed to dlopen: failed to map segment from shared object")

    monkeypatch.setattr(nets_compiled, "_open", refuse)
    network = PrecompiledNetwork(model, tmp_path)
    with caplog.at_level(logging.WARNING, logger="stylecore.nets.compiled"):
        out = network(image, weight)
    assert "does not load here" in caplog.text and "TMPDIR" in caplog.text
    torch.testing.assert_close(out, _eager(model, image, weight), atol=1e-4, rtol=1e-4)
    marker = (tmp_path / file_name(model, image, weight)).with_suffix(nets_compiled.FAILED)
    assert marker.is_file() and not marker.with_suffix(nets_compiled.SUFFIX).exists()
    assert "failed to dlopen" in marker.read_text()

    monkeypatch.setattr(nets_compiled, "_open", real_open)
    builds: list[int] = []
    monkeypatch.setattr(PrecompiledNetwork, "_build", lambda *a: builds.append(1))
    again = PrecompiledNetwork(model, tmp_path)
    torch.testing.assert_close(again(image, weight), _eager(model, image, weight), atol=1e-4, rtol=1e-4)
    assert not builds and not again.loaded


def test_a_compiled_stylizer_keeps_its_network_for_the_next_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stylizer wires it in: a compiled CPU job saves the network it compiled, the next
    job (a new stylizer, as in a new process) loads it, and both give the same frames
    (a guard that refused the stylizer's tensors would compile again instead)."""
    from stylecore.modes.feedforward import Stylizer
    from stylecore.nets.model_file import ModelInfo

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torchinductor"))
    model = _network(0)
    info = ModelInfo(config=model.config, style_name="test")
    frames = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(2))
    first = Stylizer(model, info, torch.device("cpu"), compile=True)
    assert isinstance(first.compiled, PrecompiledNetwork)
    a = first(frames, [0.7, 0.7])
    second = Stylizer(model, info, torch.device("cpu"), compile=True)
    b = second(frames, [0.7, 0.7])
    kept = list((tmp_path / "compiled").glob("*" + nets_compiled.SUFFIX))
    assert len(kept) == 1 and first.compiled.saved == kept and second.compiled.loaded == kept
    assert not second.compiled.saved
    torch.testing.assert_close(a, b, atol=0, rtol=0)
