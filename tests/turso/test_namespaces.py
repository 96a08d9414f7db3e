"""Namespace validation matches what turso-server accepts (and what the operator lets through)."""

from __future__ import annotations

from pathlib import Path

import pytest

from buntime.turso import InvalidNamespaceError, TursoService, resolve_config, validate_namespace
from turso_operator._builders import desired_namespace
from turso_operator._errors import SpecError
from turso_server._names import is_valid_name

BAD = [
    "",
    "UPPER",
    "_state",
    "-lead",
    "a" * 64,
    "with/slash",
    "../up",
    "a.b",
    "bad name!",
    "ü",
    "%2e",
    "healthz",
    "readyz",
]
GOOD = ["runtime", "a", "k-v_2", "0abc", "a" * 63, "healthz-2", "readyz_", "xhealthz"]


@pytest.mark.parametrize("name", GOOD)
def test_valid_names(name: str) -> None:
    assert validate_namespace(name) == name


@pytest.mark.parametrize("name", [*BAD, None, 5])
def test_invalid_names_carry_code_and_value(name: object) -> None:
    with pytest.raises(InvalidNamespaceError) as info:
        validate_namespace(name)
    assert info.value.code == "INVALID_TURSO_NAMESPACE"
    assert info.value.value == name
    assert isinstance(info.value, ValueError)


def _operator_accepts(name: str) -> bool:
    try:
        desired_namespace({"database": name}, {"name": name, "namespace": "team"})
    except SpecError:
        return False
    return True


def _runtime_accepts(name: str) -> bool:
    try:
        validate_namespace(name)
    except InvalidNamespaceError:
        return False
    return True


@pytest.mark.parametrize("name", [*GOOD, *BAD])
def test_the_runtime_the_operator_and_turso_server_agree(name: str) -> None:
    """A name one part accepts and another refuses fails late (a TursoNamespace the server turns
    down, a runtime namespace that answers 400): the three rules are the same."""
    expected = name in GOOD
    assert (_runtime_accepts(name), _operator_accepts(name), is_valid_name(name)) == (expected,) * 3


async def test_service_rejects_invalid_namespaces_before_touching_disk(tmp_path: Path) -> None:
    service = TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(tmp_path / "db" / "r.db")}))
    try:
        for name in BAD:
            with pytest.raises(InvalidNamespaceError):
                await service.connect(name)
        assert not (tmp_path / "db").exists()
    finally:
        await service.aclose()
