"""Packaging: ranges in pyproject.toml, exact pins in constraints.txt, extras that keep kopf out of apps.

An app that only needs ``open_turso`` installs ``buntime`` with no extras. The offline test proves
the import path: ``buntime.worker`` and ``buntime.turso`` import with every extra's package made
unimportable. The slow one installs ``.`` into a fresh venv (no system site-packages) from the
package index and imports ``buntime.worker`` there; it skips when the index is unreachable.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: Import names of what only the extras bring.
EXTRA_MODULES = ("kopf", "prometheus_client", "yaml", "jwt", "cryptography", "jinja2")
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed without extras")
sys.meta_path.insert(0, Block())
import buntime.worker, buntime.turso
print("ok")
"""


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_dependencies_are_ranges_and_the_base_is_the_library() -> None:
    for requirement in PROJECT["dependencies"]:
        assert "==" not in requirement and "<" in requirement, f"{requirement}: use >=x,<y"
    assert names(PROJECT["dependencies"]) == {"pyturso", "aiohttp"}
    extras = PROJECT["optional-dependencies"]
    assert {"kopf", "prometheus-client"} <= names(extras["operator"])
    assert {"prometheus-client", "pyjwt"} <= names(extras["server"])
    assert "jinja2" in names(extras["dev"]) and "cryptography" not in names(
        [r for group in (PROJECT["dependencies"], *extras.values()) for r in group]
    ), "cryptography comes with pyjwt[crypto]"
    assert any(r.startswith("pyjwt[crypto]") for r in extras["server"])
    assert PROJECT["urls"]["Source"].startswith("https://")
    assert (ROOT / "operator" / "turso_operator" / "py.typed").is_file()


def test_constraints_pin_every_range_exactly() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = version
    everything = [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["server"],
                  *PROJECT["optional-dependencies"]["operator"]]  # fmt: skip
    for name in names(everything):
        assert name in pins, f"{name} has no exact pin in constraints.txt"


def test_the_library_imports_without_any_extra() -> None:
    code = BLOCK.format(blocked=set(EXTRA_MODULES))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _index_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_fresh_venv_without_extras_imports_the_worker(tmp_path: Path) -> None:
    if not _index_reachable():
        pytest.skip("the package index is not reachable (offline)")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"), str(ROOT)],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    probe = "import importlib.util as u, buntime.worker; print([m for m in %r if u.find_spec(m)])"
    result = subprocess.run(
        [str(python), "-c", probe % (EXTRA_MODULES,)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"installed without extras: {result.stdout}"
