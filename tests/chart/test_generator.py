"""``hack/generate-chart.py``: the committed chart files match the manifests, and drift is caught.

The staleness test runs the real script in ``--check`` mode on this checkout. The other tests
run it on a copy (manifests, chart, docs) where a manifest changed, and render the copy with helm
to see the change arrive in the ConfigMap, the Secret, the schema and the questions.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.chart.rendering import ROOT, EnvSources, container_env, decoded, helm, one

SCRIPT = ROOT / "hack" / "generate-chart.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The generator's inputs and outputs, copied."""
    for manifest in (ROOT / "runtime" / "buntime" / "plugins").glob("*/manifest.y*ml"):
        target = tmp_path / manifest.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(manifest, target)
    shutil.copytree(ROOT / "charts" / "buntime", tmp_path / "charts" / "buntime")
    shutil.copytree(ROOT / "deploy" / "crds", tmp_path / "deploy" / "crds")
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "docs" / "chart.md", tmp_path / "docs" / "chart.md")
    return tmp_path


def test_committed_chart_files_are_current() -> None:
    result = run("--check")
    assert result.returncode == 0, (
        f"chart files are stale; run `python hack/generate-chart.py`:\n{result.stderr}"
    )


def test_a_changed_manifest_makes_the_check_fail_until_regenerated(checkout: Path) -> None:
    manifest = checkout / "runtime" / "buntime" / "plugins" / "keyval" / "manifest.yaml"
    data = yaml.safe_load(manifest.read_text())
    data["config"]["sweepInterval"]["default"] = "15s"
    manifest.write_text(yaml.safe_dump(data))

    stale = run("--check", "--root", str(checkout))
    assert stale.returncode == 1
    assert "stale: charts/buntime/values.yaml" in stale.stderr
    assert "stale: charts/buntime/questions.yaml" in stale.stderr
    assert "stale: docs/chart.md" in stale.stderr

    assert run("--root", str(checkout)).returncode == 0
    assert run("--check", "--root", str(checkout)).returncode == 0
    docs = [d for d in yaml.safe_load_all(helm("template", "x", str(checkout / "charts" / "buntime"))) if d]
    assert one(docs, "ConfigMap")["data"]["KEYVAL_SWEEP_INTERVAL"] == "15s"


def test_a_new_plugin_with_a_password_lands_in_the_secret_and_the_questions(checkout: Path) -> None:
    plugin = checkout / "runtime" / "buntime" / "plugins" / "billing"
    plugin.mkdir()
    (plugin / "manifest.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "@acme/plugin-billing",
                "entry": "billing:create",
                "config": {
                    "endpoint.url": {"type": "string", "default": "", "env": "BILLING_URL", "label": "URL"},
                    "endpoint.key": {
                        "type": "password",
                        "env": "BILLING_KEY",
                        "label": "Key",
                        "showIf": "enabled=true",
                    },
                    "enabled": {"type": "bool", "default": False, "env": "BILLING_ENABLED", "label": "On"},
                    "retries": {"type": "int", "default": 3, "env": "BILLING_RETRIES", "label": "Retries"},
                },
            }
        )
    )
    assert run("--root", str(checkout)).returncode == 0
    chart = checkout / "charts" / "buntime"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert values["plugins"]["billing"] == {
        "endpoint": {"url": "", "key": ""},
        "enabled": False,
        "retries": 3,
    }
    questions = {
        q["variable"]: q for q in yaml.safe_load((chart / "questions.yaml").read_text())["questions"]
    }
    assert questions["plugins.billing.endpoint.key"]["type"] == "password"
    assert questions["plugins.billing.endpoint.key"]["show_if"] == "plugins.billing.enabled=true"
    assert questions["plugins.billing.enabled"] == {
        "variable": "plugins.billing.enabled",
        "label": "On",
        "type": "boolean",
        "default": "false",
        "group": "Billing Plugin",
    }

    out = helm(
        "template",
        "x",
        str(chart),
        "--set-string",
        "plugins.billing.endpoint.key=s3cr3t-key",
        "--set",
        "plugins.billing.retries=0",
    )
    docs = [d for d in yaml.safe_load_all(out) if d]
    configmap = one(docs, "ConfigMap")["data"]
    assert configmap["BILLING_ENABLED"] == "false"
    assert configmap["BILLING_RETRIES"] == "0"
    assert "BILLING_URL" not in configmap  # empty: the plugin's own default applies
    assert "BILLING_KEY" not in configmap
    assert decoded(one(docs, "Secret", "x-buntime-runtime"))["BILLING_KEY"] == "s3cr3t-key"
    env = container_env(
        one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0], EnvSources(docs)
    )
    assert env["BILLING_KEY"] == "s3cr3t-key"
    schema_error = helm("template", "x", str(chart), "--set", "plugins.billing.retries=lots", check=False)
    assert "plugins/billing/retries" in schema_error


def test_a_password_marked_generate_is_generated_into_the_secret_unless_given(checkout: Path) -> None:
    plugin = checkout / "runtime" / "buntime" / "plugins" / "billing"
    plugin.mkdir()
    field = {"type": "password", "env": "BILLING_ADMIN_KEY", "label": "Admin Key", "generate": True}
    (plugin / "manifest.yaml").write_text(
        yaml.safe_dump(
            {"name": "@acme/plugin-billing", "entry": "billing:create", "config": {"adminKey": field}}
        )
    )
    assert run("--root", str(checkout)).returncode == 0
    chart = str(checkout / "charts" / "buntime")
    generated = decoded(
        one([d for d in yaml.safe_load_all(helm("template", "x", chart)) if d], "Secret", "x-buntime-runtime")
    )
    assert len(generated["BILLING_ADMIN_KEY"]) == 48 and generated["BILLING_ADMIN_KEY"].isalnum()
    out = helm("template", "x", chart, "--set-string", "plugins.billing.adminKey=given")
    given = decoded(one([d for d in yaml.safe_load_all(out) if d], "Secret", "x-buntime-runtime"))
    assert given["BILLING_ADMIN_KEY"] == "given"


def test_a_bad_manifest_is_reported_with_its_file(checkout: Path) -> None:
    manifest = checkout / "runtime" / "buntime" / "plugins" / "proxy" / "manifest.yaml"
    data = yaml.safe_load(manifest.read_text())
    data["config"]["timeout"]["type"] = "seconds"
    manifest.write_text(yaml.safe_dump(data))
    result = run("--check", "--root", str(checkout))
    assert result.returncode == 2
    assert "runtime/buntime/plugins/proxy/manifest.yaml: config.timeout: type must be one of" in result.stderr
