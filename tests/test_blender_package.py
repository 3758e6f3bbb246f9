"""Packaging: the extension zip builds, Blender's own validator accepts it, it installs."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import blender_helpers as bh
import pytest

bpy = pytest.importorskip("bpy")

sys.path.insert(0, str(bh.REPO / "tools"))
import build_extension  # noqa: E402

ADDON_DIR = bh.REPO / "blender_addon"
CONTRACT = bh.REPO / "stylecore" / "contract.py"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_extension.build(tmp_path_factory.mktemp("dist"))


def blender_ext_cli() -> Path | None:
    """Blender's extension command-line tool, shipped inside the bpy module."""
    import bpy.utils

    for scripts in bpy.utils.script_paths():
        cli = Path(scripts) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
        if cli.is_file():
            return cli
    return None


def test_zip_holds_the_addon_in_one_folder(archive: Path) -> None:
    manifest = build_extension.read_manifest(ADDON_DIR / "blender_manifest.toml")
    assert archive.name == f"{manifest['id']}-{manifest['version']}.zip"
    names = zipfile.ZipFile(archive).namelist()
    assert {n.split("/")[0] for n in names} == {manifest["id"]}
    shipped = {n.split("/", 1)[1] for n in names}
    assert {"__init__.py", "blender_manifest.toml", "batch.py", "vse.py"} <= shipped
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert build_extension.build(archive.parent).read_bytes() == archive.read_bytes()  # reproducible


def test_zip_carries_the_engines_contract(archive: Path) -> None:
    """The installed add-on has no checkout to load the contract from: the zip holds the file itself."""
    manifest = build_extension.read_manifest(ADDON_DIR / "blender_manifest.toml")
    assert zipfile.ZipFile(archive).read(f"{manifest['id']}/contract.py") == CONTRACT.read_bytes()


def test_contract_imports_nothing() -> None:
    """Blender's Python reads it without stylecore's dependencies (or stylecore)."""
    tree = ast.parse(CONTRACT.read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def test_addon_speaks_the_engines_contract() -> None:
    import stylecore.contract as engine
    from blender_addon import contract, jobs, props, protocol, vse

    assert {name: getattr(contract, name) for name in engine.__all__} == {name: getattr(engine, name)
                                                                         for name in engine.__all__}
    assert protocol.PROTOCOL == engine.PROTOCOL and jobs.FRAME_NAME == engine.FRAME_NAME
    assert jobs.UNHASHED_FIELDS == engine.UNHASHED_FIELDS and jobs.IMAGE_EXTENSIONS == engine.IMAGE_EXTENSIONS
    # Every engine choice has its panel item, and every panel item is an engine choice.
    for items, names, engine_names in ((props.MODE_ITEMS, jobs.MODES, engine.MODES),
                                       (props.PRESERVE_ITEMS, jobs.PRESERVE, engine.PRESERVE_COLORS),
                                       (props.LOSS_NET_ITEMS, jobs.LOSS_NETS, engine.LOSS_NETS)):
        assert sorted(item[0] for item in items) == sorted(names)
        assert sorted(names.values()) == sorted(engine_names)
    assert sorted(vse.VIDEO_CONTAINERS) == sorted(engine.VIDEO_SUFFIXES)


def test_blenders_validator_accepts_the_zip(archive: Path) -> None:
    cli = blender_ext_cli()
    if cli is None:
        pytest.skip("this bpy build ships no blender_ext.py")
    done = subprocess.run([sys.executable, str(cli), "validate", str(archive)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout


def test_manifest_and_bl_info_agree() -> None:
    manifest = build_extension.read_manifest(ADDON_DIR / "blender_manifest.toml")
    tree = ast.parse((ADDON_DIR / "__init__.py").read_text())
    bl_info = next(ast.literal_eval(node.value) for node in tree.body
                   if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "bl_info")
    assert ".".join(map(str, bl_info["version"])) == manifest["version"]
    assert ".".join(map(str, bl_info["blender"])) == manifest["blender_version_min"]


def test_addon_never_imports_torch_or_stylecore() -> None:
    for path in ADDON_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in {"torch", "stylecore", "cv2"}, f"{path.name} imports {name}"


def test_unzipped_folder_enables_as_a_classic_addon(archive: Path, tmp_path: Path) -> None:
    """Installed under its own folder name, relative imports and preferences still work."""
    zipfile.ZipFile(archive).extractall(tmp_path)
    module = archive.name.split("-")[0]
    code = (
        "import sys, bpy, addon_utils\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        f"assert addon_utils.enable({module!r}, default_set=True) is not None\n"
        f"import {module}.contract as contract\n"
        f"assert contract.__file__.startswith({str(tmp_path)!r}) and contract.PROTOCOL > 0\n"
        "assert hasattr(bpy.types, 'SEQUENCER_OT_stylize') and hasattr(bpy.types, 'SEQUENCER_PT_stylize')\n"
        f"print('prefs', bpy.context.preferences.addons[{module!r}].preferences.output_dir)\n"
        f"addon_utils.disable({module!r})\n"
        "assert not hasattr(bpy.types, 'SEQUENCER_OT_stylize')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prefs //stylized/" in done.stdout
