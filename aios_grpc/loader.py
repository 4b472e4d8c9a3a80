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
            name = path.stem
            loaded = getattr(sys.modules.get(name), "__file__", None)
            if name in sys.modules and (loaded is None or Path(loaded).resolve() != path.resolve()):
                # A file named like a module already imported (json.py, redis.py) must not
                # replace it: the SDK and the block itself still import the real one.
                name = f"aios_block_file_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise BlockLoadError(f"cannot import {ref!r}: {module_name} is not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
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
