"""Stand-in, in a checkout, for the facts the add-on shares with the engine.

Their one home is ``stylecore/contract.py``. The extension zip carries that file in this
one's place (tools/build_extension.py); here, in a checkout, it is loaded by path, since
Blender's Python may have no stylecore (nor torch) to import it from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_ENGINE_CONTRACT = Path(__file__).resolve().parents[1] / "stylecore" / "contract.py"

if not _ENGINE_CONTRACT.is_file():
    raise ImportError(f"{_ENGINE_CONTRACT} is missing: install the add-on from the zip tools/build_extension.py builds")
_spec = importlib.util.spec_from_file_location(f"{__name__}._engine", _ENGINE_CONTRACT)
assert _spec is not None and _spec.loader is not None  # a .py path always has a source loader
_engine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_engine)
__all__ = list(_engine.__all__)
globals().update({name: getattr(_engine, name) for name in __all__})
