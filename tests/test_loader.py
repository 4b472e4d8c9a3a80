"""``load_block_class`` with file paths: a block file never replaces a module already imported."""

from __future__ import annotations

import json
import sys

import pytest

from aios_grpc.errors import BlockLoadError
from aios_grpc.loader import load_block_class

BLOCK = (
    "class Block:\n"
    "    def __init__(self, context):\n"
    "        pass\n"
    "    def on_data(self, entry):\n"
    "        return True, None\n"
)


def test_a_block_file_named_like_an_imported_module_leaves_that_module_alone(tmp_path):
    (tmp_path / "json.py").write_text(BLOCK)
    cls = load_block_class(f"{tmp_path}/json.py:Block")
    assert cls.__name__ == "Block"
    assert sys.modules["json"] is json  # the SDK and the block still get the real json
    assert json.dumps({"a": 1}) == '{"a": 1}'


def test_a_block_file_that_fails_to_import_is_not_left_in_sys_modules(tmp_path):
    (tmp_path / "half_imported_block.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(BlockLoadError, match="RuntimeError: boom"):
        load_block_class(f"{tmp_path}/half_imported_block.py:Block")
    assert "half_imported_block" not in sys.modules


def test_a_block_file_with_a_fresh_name_keeps_it(tmp_path):
    (tmp_path / "my_fresh_block.py").write_text(BLOCK)
    cls = load_block_class(f"{tmp_path}/my_fresh_block.py:Block")
    assert cls.__module__ == "my_fresh_block"


def test_loading_the_same_file_twice_keeps_its_module_name(tmp_path):
    (tmp_path / "twice_loaded_block.py").write_text(BLOCK)
    first = load_block_class(f"{tmp_path}/twice_loaded_block.py:Block")
    second = load_block_class(f"{tmp_path}/twice_loaded_block.py:Block")
    assert first.__module__ == second.__module__ == "twice_loaded_block"
