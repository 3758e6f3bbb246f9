"""``stylecore export MODEL.safetensors OUT.onnx``: ONNX export of a feedforward model."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a feedforward model to ONNX",
        description="Export a trained feedforward model (.safetensors) to ONNX, and check that "
        "onnxruntime's output matches torch's. Needs: pip install \"stylecore[onnx]\".",
    )
    parser.add_argument("model", help="model file (.safetensors), or 'default' for the shipped model")
    parser.add_argument("out", help="ONNX file to write (.onnx)")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with torch")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return export_command(model=str(args.model), out=str(args.out), check=not args.no_check)


def export_command(model: str, out: str, check: bool) -> int:
    from stylecore.catalog import default_model_path
    from stylecore.nets.onnx_export import TOLERANCE, export_onnx

    path = default_model_path() if model == "default" else model
    report = export_onnx(path, out, check=check)
    if report.max_abs_diff is None:
        note = "not checked (onnxruntime is not installed)" if check else "not checked"
    else:
        note = f"matches torch: max |onnx - torch| = {report.max_abs_diff:.1e} (tolerance {TOLERANCE:.0e})"
    print(f"wrote {report.path}; {note}")
    return 0
