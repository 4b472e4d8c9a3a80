"""Import a block class from ``MODULE:CLASS`` or ``path/to/file.py:CLASS``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from aios_grpc.errors import BlockLoadError


def load_block_class(ref: str) -> type[Any]:
    """The class named by ``ref``; ``BlockLoadError`` with a one-line reason otherwise."""
    module_name, sep, class_name = ref.rpartition(":")
    if not sep or not module_name or not class_name:
        raise BlockLoadError(f"block reference {ref!r} must look like MODULE:CLASS or path/to/file.py:CLASS")
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise BlockLoadError(f"cannot import {ref!r}: file {module_name} does not exist")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise BlockLoadError(f"cannot import {ref!r}: {module_name} is not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")  # `aios-grpc serve mymodule:Block` from the block's folder
            module = importlib.import_module(module_name)
    except BlockLoadError:
        raise
    except Exception as exc:
        raise BlockLoadError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise BlockLoadError(f"module {module_name!r} has no attribute {class_name!r}")
    if not isinstance(cls, type):
        raise BlockLoadError(f"{ref!r} is a {type(cls).__name__}, not a class")
    return cls
