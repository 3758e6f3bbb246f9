"""Build the installable Blender extension zip of the add-on (no Blender needed).

    python tools/build_extension.py [--output-dir dist] [--worker-wheel dist/stylecore-0.1.0-py3-none-any.whl]

Writes ``dist/<id>-<version>.zip`` with every file of ``blender_addon/`` inside one
top-level folder named after the extension id; ``contract.py`` is the engine's
``stylecore/contract.py`` (the facts both sides share), in place of the checkout's stand-in
that loads it by path. ``--worker-wheel`` bundles a stylecore
wheel (``pip wheel --no-deps .``) in ``worker_wheels/``: Set Up Worker installs it into the
worker's environment instead of stylecore from the package index. (Not the manifest's
``wheels``: those go into Blender's own Python, and stylecore needs torch.) Blender 4.2+ installs it as an extension
(Get Extensions > Install from Disk; a manifest inside a single folder is accepted), and
the same zip installs as a classic add-on (Add-ons > Install from Disk), whose folder
becomes the module name.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "blender_addon"
MANIFEST = "blender_manifest.toml"
# Add-on files the zip takes from the engine: the one home of what both sides share.
VENDORED = {"contract.py": REPO / "stylecore" / "contract.py"}
WORKER_WHEELS = "worker_wheels"  # blender_addon/worker_setup.py looks here
REQUIRED = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type", "blender_version_min",
            "license")
EXCLUDED_DIRS = frozenset({"__pycache__"})
EXCLUDED_SUFFIXES = frozenset({".pyc", ".pyo"})
# A fixed timestamp makes the zip reproducible (same sources, same bytes).
ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def read_manifest(path: Path) -> dict[str, object]:
    """The manifest's top-level keys (tomllib where available, else a strict subset)."""
    text = path.read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python 3.10: top-level ``key = "string"`` lines are all we need
        data: dict[str, object] = {}
        for match in re.finditer(r'^(\w+)\s*=\s*"([^"]*)"', text, re.MULTILINE):
            data.setdefault(match.group(1), match.group(2))
        if re.search(r"^license\s*=", text, re.MULTILINE):
            data.setdefault("license", "present")
        return data
    return tomllib.loads(text)


def source_files(source: Path) -> list[Path]:
    """Files to ship, relative to ``source``, sorted."""
    files = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_dir() or any(part in EXCLUDED_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.suffix in EXCLUDED_SUFFIXES:
            continue
        files.append(rel)
    return files


def build(output_dir: Path, source: Path = SOURCE, worker_wheels: list[Path] | tuple[Path, ...] = ()) -> Path:
    """Write the zip and return its path; raises ``ValueError`` for a bad manifest or a
    worker wheel that is not a stylecore wheel."""
    manifest = read_manifest(source / MANIFEST)
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        raise ValueError(f"{source / MANIFEST} lacks {', '.join(missing)}")
    ext_id, version = str(manifest["id"]), str(manifest["version"])
    if not re.fullmatch(r"[a-z][a-z0-9_]*", ext_id):
        raise ValueError(f"extension id {ext_id!r} must be lower case letters, digits and _ (a Python module name)")
    if not (source / "__init__.py").is_file():
        raise ValueError(f"{source} has no __init__.py")
    for wheel in worker_wheels:
        if not (wheel.is_file() and wheel.name.startswith("stylecore-") and wheel.suffix == ".whl"):
            raise ValueError(f"{wheel} is not a stylecore wheel file (stylecore-VERSION-...whl)")
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{ext_id}-{version}.zip"
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel in source_files(source):
            info = zipfile.ZipInfo(f"{ext_id}/{rel.as_posix()}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, VENDORED.get(rel.as_posix(), source / rel).read_bytes())
        for wheel in worker_wheels:
            info = zipfile.ZipInfo(f"{ext_id}/{WORKER_WHEELS}/{wheel.name}", date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, wheel.read_bytes())  # stored: a wheel is compressed already
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / "dist", help="where the zip goes (default: dist/)")
    parser.add_argument("--worker-wheel", type=Path, action="append", default=[], metavar="WHEEL",
                        help="a stylecore wheel for Set Up Worker to install (default: from the package index)")
    args = parser.parse_args(argv)
    try:
        target = build(args.output_dir, worker_wheels=args.worker_wheel)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
