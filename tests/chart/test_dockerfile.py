"""The Dockerfile, read rather than built (this machine has no Docker engine).

It must copy only files that exist and that ``.dockerignore`` lets through, install tursodb the
way ``hack/install-tools.sh`` does (same npm package, version and both checksums on amd64; on
arm64 a source build of the commit the same version's tag points to, never a macOS build), and
produce the non-root image whose commands the chart runs. ``tests/cluster/node`` builds it for real
(buildah, ``hack/build-images.sh``) and runs it.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.chart.rendering import CHART, ROOT, VALUE_SETS, containers, render

DOCKERFILE = ROOT / "Dockerfile"
INSTALL_TOOLS = ROOT / "hack" / "install-tools.sh"


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped; ``stage`` counts FROMs."""
    instructions: list[Instruction] = []
    stage = -1
    buffer = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buffer and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        full = (buffer + line).strip()
        buffer = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword, args.strip()))
    assert not buffer, "dangling line continuation"
    return instructions


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())


def args_of(keyword: str, stage: int | None = None) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.keyword == keyword and (stage is None or i.stage == stage)]


def build_args() -> dict[str, str]:
    out: dict[str, str] = {}
    for arg in args_of("ARG"):
        name, _, value = arg.partition("=")
        out[name] = value
    return out


def script_vars() -> dict[str, str]:
    return dict(re.findall(r'^([A-Z0-9_]+)="([^"]*)"', INSTALL_TOOLS.read_text(), flags=re.MULTILINE))


def dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    allowed = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def test_multi_stage_with_a_slim_python_base() -> None:
    froms = args_of("FROM")
    assert build_args()["PYTHON_IMAGE"].startswith("python:3.11-slim")
    images = [f.split()[1] if f.startswith("--platform") else f.split()[0] for f in froms]
    names = [f.split(" AS ")[1] if " AS " in f else "" for f in froms]
    stages = dict(zip(names, images, strict=True))
    # tursodb: npm (amd64) or a Rust source build (arm64), chosen by TARGETARCH.
    assert stages["tursodb-amd64"] == "${NODE_IMAGE}" and build_args()["NODE_IMAGE"].startswith("node:")
    assert stages["tursodb-arm64"] == "${RUST_IMAGE}" and build_args()["RUST_IMAGE"].startswith("rust:")
    assert stages["tursodb"] == "tursodb-${TARGETARCH}" and "TARGETARCH" in build_args()
    # The wheel and the image itself are the slim Python base; the final stage is unnamed.
    assert stages["wheel"] == "${PYTHON_IMAGE}"
    assert images[-1] == "${PYTHON_IMAGE}" and names[-1] == ""


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    copies = [i for i in INSTRUCTIONS if i.keyword == "COPY" and not i.args.startswith("--from")]
    assert copies
    for copy in copies:
        *sources, _dest = copy.args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert dockerignore_allows(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"
    copied = {s.rstrip("/") for c in copies for s in c.args.split()[:-1]}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_roots = {
        p.split("/")[0] for p in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    }
    assert package_roots | {"pyproject.toml", project["project"]["readme"]} <= copied
    assert not dockerignore_allows(".venv") and not dockerignore_allows(".tools/bin/tursodb")
    assert not dockerignore_allows("runtime/buntime/__pycache__")


def test_tursodb_amd64_comes_from_the_same_npm_package_as_the_tools_script() -> None:
    script, args = script_vars(), build_args()
    package, _, version = script["TURSODB_PKG"].rpartition("@")
    assert args["TURSODB_NPM_PKG"] == package
    assert args["TURSODB_VERSION"] == version
    assert args["TURSODB_TGZ_SHA256"] == script["TURSODB_TGZ_SHA256"]
    assert args["TURSODB_SHA256"] == script["TURSODB_SHA256"]
    run = " ".join(args_of("RUN", stage=0))
    # Same member of the tarball, both checksums verified, fetched the same way as install_tursodb().
    assert "package/tursodb" in run and "package/tursodb" in INSTALL_TOOLS.read_text()
    assert '"${TURSODB_TGZ_SHA256}  /tmp/tursodb.tgz" | sha256sum -c -' in run
    assert '"${TURSODB_SHA256}  /tmp/package/tursodb" | sha256sum -c -' in run
    assert 'npm pack --silent "${TURSODB_NPM_PKG}@${TURSODB_VERSION}"' in run
    assert "npm pack --silent" in INSTALL_TOOLS.read_text()


def stage_of(name: str) -> int:
    froms = [i for i in INSTRUCTIONS if i.keyword == "FROM"]
    return next(i.stage for i in froms if i.args.endswith(f" AS {name}"))


def test_tursodb_arm64_is_a_source_build_of_the_pinned_commit() -> None:
    text = DOCKERFILE.read_text().lower()
    assert "darwin" not in text and "apple" not in text
    script, args = script_vars(), build_args()
    # The pin and the tools script agree: same version, and the commit its tag points to.
    assert args["TURSODB_VERSION"] == script["TURSODB_PKG"].rpartition("@")[2]
    assert re.fullmatch(r"[0-9a-f]{40}", args["TURSODB_GIT_COMMIT"])
    assert args["TURSODB_GIT_COMMIT"] == script["TURSODB_SOURCE_COMMIT"]
    assert args["TURSODB_GIT_URL"] == script["TURSODB_SOURCE_REPO"]
    run = " ".join(args_of("RUN", stage=stage_of("tursodb-arm64")))
    # Fetch exactly the commit, refuse anything else, build the lockfile's graph, check the version.
    assert 'git fetch -q --depth 1 origin "${TURSODB_GIT_COMMIT}"' in run
    assert 'test "$(git rev-parse HEAD)" = "${TURSODB_GIT_COMMIT}"' in run
    assert "cargo build --release --locked -p turso_cli --bin tursodb" in run
    assert 'tursodb --version | grep -F "${TURSODB_VERSION}"' in run
    # No archive and no checksum to pin any more: the commit is the pin.
    assert "releases/download" not in text and "TURSODB_ARM64_TXZ_SHA256".lower() not in text


def test_the_image_is_non_root_and_its_commands_exist() -> None:
    final = max(i.stage for i in INSTRUCTIONS)
    (user,) = args_of("USER", stage=final)
    uid = int(user.split(":")[0])
    assert uid != 0
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == uid
    (cmd,) = args_of("CMD", stage=final)
    assert yaml.safe_load(cmd) == ["buntime", "serve"]
    assert "/usr/local/bin/tursodb" in " ".join(args_of("COPY", stage=final))

    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    commands: set[str] = set()
    for name in ("turso-server", "defaults"):
        for obj in render(VALUE_SETS[name]):
            if obj["kind"] in ("Deployment", "StatefulSet"):
                commands |= {c["command"][0] for c in containers(obj)}
    # python: the runtime's init container waits for turso-server with the image's interpreter.
    assert commands == {"buntime", "turso-server", "buntime-operator", "python"}
    assert commands - {"python"} <= scripts


@pytest.mark.parametrize("component", ["turso-server"])
def test_chart_points_at_the_tursodb_the_image_installs(component: str) -> None:
    docs: list[dict[str, Any]] = render(VALUE_SETS["turso-server"])
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TURSODB_BIN"] == "/usr/local/bin/tursodb"
    final = max(i.stage for i in INSTRUCTIONS)
    assert "--from=tursodb /out/tursodb /usr/local/bin/tursodb" in args_of("COPY", stage=final)
    for arch in ("amd64", "arm64"):
        assert "/out/tursodb" in " ".join(args_of("RUN", stage=stage_of(f"tursodb-{arch}")))
