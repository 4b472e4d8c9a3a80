"""Settings: AIOS_* variables, the original SDK's names, overrides from code, clear errors."""

from __future__ import annotations

import re

import pytest

from aios_grpc import ConfigurationError, Context, Settings, load_settings
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("AIOS_") or name in {"BLOCK_ID", "INSTANCE_ID", "BLOCK_INIT_PARAMETERS", "GPUS"}:
            monkeypatch.delenv(name)


def test_defaults():
    s = load_settings()
    assert (s.host, s.port, s.workers, s.block_id) == ("127.0.0.1", 50051, 4, "block")
    assert re.fullmatch(r"instance-[0-9a-f]{8}", s.instance_id)
    assert load_settings().instance_id != s.instance_id
    assert s.address == "127.0.0.1:50051"


def test_aios_variables(monkeypatch):
    monkeypatch.setenv("AIOS_BLOCK_ID", "detector")
    monkeypatch.setenv("AIOS_INSTANCE_ID", "detector-0")
    monkeypatch.setenv("AIOS_HOST", "0.0.0.0")
    monkeypatch.setenv("AIOS_PORT", "6000")
    monkeypatch.setenv("AIOS_WORKERS", "9")
    monkeypatch.setenv("AIOS_BLOCK_INIT_PARAMETERS", '{"threshold": 0.7}')
    monkeypatch.setenv("AIOS_GPUS", '["0", "1"]')
    monkeypatch.setenv("AIOS_VALIDATE_JSON", "false")
    monkeypatch.setenv("AIOS_LOG_LEVEL", "debug")
    s = load_settings()
    assert (s.block_id, s.instance_id, s.host, s.port, s.workers) == ("detector", "detector-0", "0.0.0.0", 6000, 9)
    assert s.block_init_parameters == {"threshold": 0.7} and s.gpus == ["0", "1"]
    assert s.validate_json is False and s.log_level == "DEBUG"
    ctx = Context.from_settings(s)
    assert ctx.block_id == "detector" and ctx.allocation_info["gpus"] == ["0", "1"]
    assert ctx.block_init_parameters == {"threshold": 0.7}


def test_the_original_sdks_names(monkeypatch):
    monkeypatch.setenv("BLOCK_ID", "legacy-block")
    monkeypatch.setenv("INSTANCE_ID", "legacy-instance")
    monkeypatch.setenv("BLOCK_INIT_PARAMETERS", '{"k": 1}')
    s = load_settings()
    assert (s.block_id, s.instance_id, s.block_init_parameters) == ("legacy-block", "legacy-instance", {"k": 1})


def test_the_aios_name_wins_over_the_original_one(monkeypatch):
    monkeypatch.setenv("BLOCK_ID", "legacy")
    monkeypatch.setenv("AIOS_BLOCK_ID", "new")
    assert load_settings().block_id == "new"


def test_overrides_from_code_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("AIOS_PORT", "6000")
    monkeypatch.setenv("AIOS_BLOCK_ID", "env")
    s = load_settings(port=0, block_id="code", workers=2)
    assert (s.port, s.block_id, s.workers) == (0, "code", 2)
    assert Settings(port=7).port == 7


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AIOS_PORT": "70000"}, "AIOS_PORT='70000': Input should be less than or equal to 65535"),
        ({"AIOS_WORKERS": "many"}, "AIOS_WORKERS='many': Input should be a valid integer"),
        ({"AIOS_LOG_LEVEL": "chatty"}, "AIOS_LOG_LEVEL='chatty': Value error, unknown log level 'chatty'"),
        ({"AIOS_BLOCK_INIT_PARAMETERS": "[1]"}, "AIOS_BLOCK_INIT_PARAMETERS='[1]': Input should be a valid dictionary"),
        ({"BLOCK_INIT_PARAMETERS": "{oops"}, "BLOCK_INIT_PARAMETERS='{oops': not valid JSON"),
        ({"AIOS_GPUS": "0,1"}, "AIOS_GPUS='0,1': not valid JSON"),
    ],
)
def test_validation_errors_name_the_variable(monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert str(raised.value).startswith("invalid settings: ")
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_several_bad_values_are_reported_together(monkeypatch):
    monkeypatch.setenv("AIOS_PORT", "-1")
    monkeypatch.setenv("AIOS_WORKERS", "0")
    with pytest.raises(ConfigurationError, match=r"AIOS_PORT='-1'.*; AIOS_WORKERS='0'"):
        load_settings()


def test_a_bad_override_from_code_names_the_setting():
    # Named by the keyword it was given as, not by an environment variable that is not set.
    with pytest.raises(ConfigurationError, match="port='x'") as bad:
        load_settings(port="x")
    assert "AIOS_PORT" not in str(bad.value)


def test_every_setting_is_in_the_configuration_reference():
    text = (ROOT / "docs" / "configuration.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(AIOS_[A-Z0-9_]+)` \|.*$", text, re.M)}
    missing = [f"AIOS_{name.upper()}" for name in Settings.model_fields if f"AIOS_{name.upper()}" not in rows]
    assert not missing, f"add rows to docs/configuration.md for {missing}"
    known = {f"AIOS_{n.upper()}" for cls in _settings_classes() for n in cls.model_fields}
    unknown = sorted(set(rows) - known)
    assert not unknown, f"docs/configuration.md lists settings that do not exist: {unknown}"
    for name, field in Settings.model_fields.items():
        legacy = [a for a in field.validation_alias.choices if a.isupper() and not a.startswith("AIOS_")]
        for old in legacy:
            assert f"`{old}`" in rows[f"AIOS_{name.upper()}"], f"legacy name {old} missing from the row of {name}"


def _settings_classes() -> list[type]:
    """Settings and the other pydantic settings classes in aios_grpc's ``*settings`` modules."""
    import importlib
    import pkgutil

    from pydantic_settings import BaseSettings

    import aios_grpc

    found: list[type] = [Settings]
    for info in pkgutil.walk_packages(aios_grpc.__path__, "aios_grpc."):
        if info.name.rsplit(".", 1)[-1] == "settings":
            module = importlib.import_module(info.name)
            found += [
                v
                for v in vars(module).values()
                if isinstance(v, type) and issubclass(v, BaseSettings) and v is not BaseSettings
            ]
    return found


def test_every_setting_has_a_docstring():
    import ast

    tree = ast.parse((ROOT / "aios_grpc" / "settings.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    documented = {
        node.target.id
        for node, after in zip(cls.body, cls.body[1:], strict=False)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
    }  # fmt: skip
    assert set(Settings.model_fields) <= documented


def _documented_default(cell: str) -> str | None:
    """The default a docs table cell states, as text; None for a computed one ("random ...")."""
    cell = cell.strip()
    if cell == "(empty)":
        return ""
    found = re.fullmatch(r"`(.*)`", cell)
    return found.group(1) if found else None


def _shown(value: object) -> str:
    import json

    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def test_the_configuration_reference_states_the_real_defaults(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    from aios_grpc.blockhealth.settings import BlockHealthSettings

    text = (ROOT / "docs" / "configuration.md").read_text()
    instance, aggregator = text.split("## Block health aggregator", 1)
    tables = [(instance, Settings(), 3), (aggregator, BlockHealthSettings(), 2)]
    wrong = []
    for section, settings, column in tables:
        for row in re.finditer(r"^\| `AIOS_([A-Z0-9_]+)` \|(.*)$", section, re.M):
            cells = row.group(2).split(" | ")
            stated = _documented_default(cells[column - 2])
            name = row.group(1).lower()
            if stated is None or name not in type(settings).model_fields:
                continue
            actual = _shown(getattr(settings, name))
            if stated != actual:
                wrong.append(f"AIOS_{row.group(1)}: docs say {stated!r}, Settings has {actual!r}")
    assert not wrong, wrong


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"AIOS_BLOCK_HEALTH_PORT": "x"},
            "invalid settings: AIOS_BLOCK_HEALTH_PORT='x': Input should be a valid integer",
        ),
        (
            {"AIOS_BLOCK_HEALTH_POLICIES": "[oops"},
            "invalid settings: AIOS_BLOCK_HEALTH_POLICIES='[oops': not valid JSON",
        ),
    ],
)
def test_block_health_settings_errors_name_the_variable(monkeypatch, env, expected):
    from aios_grpc.blockhealth import load_block_health_settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_block_health_settings()
    assert str(raised.value).startswith(expected)
    assert "\n" not in str(raised.value)


def test_an_unknown_keyword_is_rejected_with_the_closest_name():
    from aios_grpc import Block
    from tests.blocks.basic import EchoBlock

    with pytest.raises(ConfigurationError, match=r"unknown setting 'wrokers'; did you mean 'workers'\?"):
        Block(EchoBlock, wrokers=9)
    with pytest.raises(ConfigurationError, match="unknown setting 'colour'"):
        load_settings(colour="red")


def test_block_honours_a_settings_object_and_keywords_on_top():
    from aios_grpc import Block
    from tests.blocks.basic import EchoBlock

    given = Settings(port=0, workers=7, block_id="from-object")
    assert Block(EchoBlock, settings=given).settings is given
    merged = Block(EchoBlock, settings=given, workers=3).settings
    assert (merged.workers, merged.block_id, merged.port) == (3, "from-object", 0)
    with pytest.raises(ConfigurationError, match="workers=0"):
        Block(EchoBlock, settings=given, workers=0)


def test_unknown_aios_variables_name_the_closest_known_one():
    from aios_grpc.blockhealth.settings import BlockHealthSettings
    from aios_grpc.settings import unknown_variables

    env = {"AIOS_PROT": "5", "AIOS_PORT": "1", "AIOS_BLOCK_HEALTH_PORT": "1", "AIOS_ZZZQQQ": "1", "PATH": "/bin"}
    assert unknown_variables([Settings, BlockHealthSettings], env) == [
        "AIOS_PROT is not a setting and is ignored; did you mean 'AIOS_PORT'?",
        "AIOS_ZZZQQQ is not a setting and is ignored",
    ]
