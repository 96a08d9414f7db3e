"""Namespace validation matches what turso-server accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from buntime.turso import InvalidNamespaceError, TursoService, resolve_config, validate_namespace

BAD = ["", "UPPER", "_state", "-lead", "a" * 64, "with/slash", "../up", "a.b", "bad name!", "ü", "%2e"]


@pytest.mark.parametrize("name", ["runtime", "a", "k-v_2", "0abc", "a" * 63])
def test_valid_names(name: str) -> None:
    assert validate_namespace(name) == name


@pytest.mark.parametrize("name", [*BAD, None, 5])
def test_invalid_names_carry_code_and_value(name: object) -> None:
    with pytest.raises(InvalidNamespaceError) as info:
        validate_namespace(name)
    assert info.value.code == "INVALID_TURSO_NAMESPACE"
    assert info.value.value == name
    assert isinstance(info.value, ValueError)


async def test_service_rejects_invalid_namespaces_before_touching_disk(tmp_path: Path) -> None:
    service = TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(tmp_path / "db" / "r.db")}))
    try:
        for name in BAD:
            with pytest.raises(InvalidNamespaceError):
                await service.connect(name)
        assert not (tmp_path / "db").exists()
    finally:
        await service.aclose()
