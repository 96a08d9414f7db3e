#!/usr/bin/env python3
"""Generate the chart's plugin settings from the plugins' ``manifest.yaml`` ``config`` blocks.

Why a generator with committed output: Helm reads only ``values.yaml`` and the templates, so the
chart must be installable straight from git (upstream's generated, git-ignored values.yaml was
not). Each plugin's manifest declares its settings once, in its ``config`` block, which the
runtime's own parser reads (``buntime.plugins.parse_settings``: the host resolves the same fields,
so a value the schema accepts is one the runtime accepts); this script turns them into

* ``charts/buntime/values.yaml``: the ``plugins:`` block between the GENERATED markers, with a
  comment above every key;
* ``charts/buntime/templates/_plugins.tpl``: the runtime ConfigMap entries (plain settings) and
  Secret entries (password/secret settings: a token never lands in a ConfigMap), and the names of
  the passwords the chart generates when none is given (``generate: true``, e.g. the admin keys);
* ``charts/buntime/values.schema.json``: ``properties.plugins`` (the rest is hand-written);
* ``charts/buntime/questions.yaml``: the Rancher questions between the GENERATED markers;
* ``docs/chart.md``: the values table between the GENERATED markers, built from the comments in
  values.yaml (hand-written keys included);
* ``charts/buntime/README.md``: the chart README, the same values table under a short intro;
* ``charts/buntime/templates/crd-<name>.yaml``: each CRD of ``deploy/crds/`` (the one source,
  applied as is by the operator tests) behind ``crds.enabled``, with the chart's labels and
  ``helm.sh/resource-policy: keep`` while ``crds.keep`` is true.

Run ``python hack/generate-chart.py`` after changing a manifest or values.yaml; ``--check``
writes nothing and exits 1 when a committed file is stale (the chart tests run it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from buntime.plugins import Setting, parse_settings

ROOT = Path(__file__).resolve().parents[1]

MANIFEST_NAMES = ("manifest.yaml", "manifest.yml")
PACKAGE_PREFIX = "plugin-"
#: Rancher question type per setting type; a list of objects has no question (values only).
QUESTION_TYPES = {
    "string": "string",
    "enum": "enum",
    "password": "password",
    "int": "int",
    "bool": "boolean",
    "duration": "string",
}
#: Extra Rancher conditions the chart adds to plugin questions: settings that mean nothing beside the
#: in-cluster turso-server (the runtime then syncs with it, and the chart refuses sync.url).
CHART_SHOW_IF: dict[str, str] = {
    "turso.mode": "tursoServer.enabled=false",
    "turso.executor": "tursoServer.enabled=false",
    "turso.sync.url": "tursoServer.enabled=false",
    "turso.sync.authToken": "tursoServer.enabled=false",
}
VALUES_MARKERS = ("# BEGIN GENERATED: plugins", "# END GENERATED: plugins")
QUESTIONS_MARKERS = ("# BEGIN GENERATED: plugin questions", "# END GENERATED: plugin questions")
DOCS_MARKERS = ("<!-- BEGIN GENERATED: values table", "<!-- END GENERATED: values table")
SECTION_MARKER = "# +docs:section="
EXAMPLE_MARKER = "For example:"
COMMENT_WIDTH = 100
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")
_PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9/_.-]+$")


class GeneratorError(Exception):
    """A manifest or a chart file cannot be used; the message names the file."""


@dataclass(frozen=True)
class Paths:
    """Where the inputs and outputs live in a checkout (tests point it at a copy)."""

    root: Path = ROOT

    @property
    def plugins_dir(self) -> Path:
        return self.root / "runtime" / "buntime" / "plugins"

    @property
    def chart(self) -> Path:
        return self.root / "charts" / "buntime"

    @property
    def values(self) -> Path:
        return self.chart / "values.yaml"

    @property
    def schema(self) -> Path:
        return self.chart / "values.schema.json"

    @property
    def questions(self) -> Path:
        return self.chart / "questions.yaml"

    @property
    def plugins_tpl(self) -> Path:
        return self.chart / "templates" / "_plugins.tpl"

    @property
    def docs(self) -> Path:
        return self.root / "docs" / "chart.md"

    @property
    def readme(self) -> Path:
        return self.chart / "README.md"

    @property
    def crd_sources(self) -> Path:
        return self.root / "deploy" / "crds"

    def crd_template(self, source: Path) -> Path:
        return self.chart / "templates" / f"crd-{source.stem}.yaml"

    def show(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)


@dataclass(frozen=True)
class PluginSpec:
    """A plugin with settings: its package name, values key and fields (manifest order)."""

    name: str
    key: str
    manifest: str
    fields: tuple[Setting, ...] = field(default_factory=tuple)

    @property
    def title(self) -> str:
        return " ".join(part.capitalize() for part in re.split(r"[-_]", self.key))

    def tree(self) -> dict[str, Any]:
        """The fields as a nested mapping (dotted names become nested keys); leaves are fields."""
        root: dict[str, Any] = {}
        for f in self.fields:
            node = root
            for part in f.path[:-1]:
                child = node.setdefault(part, {})
                if isinstance(child, Setting):
                    raise GeneratorError(f"{self.manifest}: {f.dotted} is nested under a setting")
                node = child
            if f.path[-1] in node:
                raise GeneratorError(f"{self.manifest}: {f.dotted} is declared twice")
            node[f.path[-1]] = f
        return root


# -- manifests --------------------------------------------------------------------------------------


def question_show_if(key: str, setting: Setting) -> str:
    """The Rancher ``show_if``: the manifest's condition on values paths, and the chart's own."""
    show_if = ""
    if setting.show_if:
        # Manifest conditions name sibling settings ("mode=sync"); Rancher wants values paths.
        show_if = "&&".join(f"plugins.{key}.{part.strip()}" for part in setting.show_if.split("&&"))
    extra = CHART_SHOW_IF.get(f"{key}.{setting.dotted}")
    if extra:
        show_if = f"{show_if}&&{extra}" if show_if else extra
    return show_if


def _manifest_files(plugins_dir: Path) -> Iterator[Path]:
    for directory in sorted(p for p in plugins_dir.iterdir() if p.is_dir()):
        for name in MANIFEST_NAMES:
            if (directory / name).is_file():
                yield directory / name
                break


def load_plugins(paths: Paths | None = None) -> list[PluginSpec]:
    """Every manifest with a ``config`` block, sorted by values key.

    Disabled manifests are kept: ``enabled: false`` is the manifest's default, and the chart
    still has to expose the settings for whoever enables the plugin.
    """
    paths = paths or Paths()
    plugins: list[PluginSpec] = []
    for path in _manifest_files(paths.plugins_dir):
        where = paths.show(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise GeneratorError(f"{where}: cannot read: {exc}") from exc
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
            raise GeneratorError(f"{where}: not a manifest (no name)")
        try:
            fields = parse_settings(data.get("config"), where)  # the runtime's parser
        except ValueError as exc:
            raise GeneratorError(str(exc)) from None
        if not fields:
            continue
        name = data["name"]
        key = name.rsplit("/", 1)[-1].removeprefix(PACKAGE_PREFIX)
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
            raise GeneratorError(f"{where}: cannot derive a values key from {name!r}")
        plugin = PluginSpec(name=name, key=key, manifest=where, fields=fields)
        plugin.tree()  # reject clashes early
        plugins.append(plugin)
    plugins.sort(key=lambda p: p.key)
    keys = [p.key for p in plugins]
    if len(keys) != len(set(keys)):
        raise GeneratorError(f"two plugins share a values key: {keys}")
    envs = [f.env for p in plugins for f in p.fields]
    if len(envs) != len(set(envs)):
        raise GeneratorError("two plugin settings share an environment variable")
    return plugins


# -- rendering --------------------------------------------------------------------------------------


def yaml_scalar(value: Any) -> str:
    """A YAML scalar: plain when it reads back as the same string, else JSON (valid YAML) quoting."""
    if isinstance(value, list | dict):
        return json.dumps(value)  # flow style, valid YAML
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN_SCALAR.fullmatch(text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text)


def comment_lines(text: str, indent: int) -> list[str]:
    prefix = " " * indent + "# "
    return textwrap.wrap(
        text,
        width=COMMENT_WIDTH,
        initial_indent=prefix,
        subsequent_indent=prefix,
        break_on_hyphens=False,
        break_long_words=False,
    )


def _field_comment(f: Setting) -> str:
    parts = [f"{f.label}." if not f.label.endswith(".") else f.label]
    if f.description:
        parts.append(f.description)
    if f.values:
        parts.append(f"One of: {', '.join(f.values)}.")
    where = "the runtime Secret" if f.secret else "the runtime ConfigMap"
    parts.append(f"Env {f.env}, in {where}.")
    if f.generate:
        parts.append(
            "The chart never leaves it unset: left empty, it generates one (48 random characters) on "
            f"first install and keeps it across upgrades; read it from the Secret <fullname>-runtime, "
            f"key {f.env}."
        )
    return " ".join(parts)


def _tpl_entry(helper: str, plugin: PluginSpec, f: Setting) -> str:
    """One include of a _helpers.tpl entry helper; ``dig`` tolerates a plugin block set to null."""
    keys = " ".join(json.dumps(part) for part in (plugin.key, *f.path))
    args = f"(list {json.dumps(f.env)} (dig {keys} nil $plugins) {json.dumps(f.type)})"
    return f'{{{{- include "buntime.plugins.{helper}" {args} -}}}}'


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
_ENV.filters["scalar"] = yaml_scalar
_ENV.filters["json"] = json.dumps
_ENV.filters["comment"] = comment_lines
_ENV.globals["field_comment"] = _field_comment
_ENV.globals["tpl_entry"] = _tpl_entry
_ENV.globals["question_show_if"] = question_show_if
_ENV.tests["field"] = lambda value: isinstance(value, Setting)

VALUES_TEMPLATE = _ENV.from_string(
    """\
{% macro node(tree, indent, plugin, prefix) %}
{% for key, value in tree.items() %}
{% if value is field %}
{% for line in field_comment(value) | comment(indent) %}
{{ line }}
{% endfor %}
{% if value.example %}
{{ " " * indent }}# For example:
{% for line in value.example.splitlines() %}
{{ " " * indent }}#   {{ line }}
{% endfor %}
{% endif %}
{{ " " * indent }}{{ key }}: {{ value.default | scalar }}
{% else %}
{% for line in ("Settings under " ~ prefix ~ key ~ ".*.") | comment(indent) %}
{{ line }}
{% endfor %}
{{ " " * indent }}{{ key }}:
{{ node(value, indent + 2, plugin, prefix ~ key ~ ".") }}
{%- endif %}
{% endfor %}
{% endmacro %}
  {{ begin }} (hack/generate-chart.py; edit the manifests, not this block)
{% for plugin in plugins %}
{% for line in (plugin.name ~ " (" ~ plugin.manifest ~ ").") | comment(2) %}
{{ line }}
{% endfor %}
  {{ plugin.key }}:
{{ node(plugin.tree(), 4, plugin, "") }}
{%- endfor %}
  {{ end }}
"""
)

PLUGINS_TPL_TEMPLATE = _ENV.from_string(
    """\
{{ '{{' }}/*
GENERATED by hack/generate-chart.py from the plugins' manifest.yaml config blocks: do not edit.
Plain settings go to the runtime ConfigMap, password/secret settings to the runtime Secret.
*/{{ '}}' }}

{{ '{{' }}/* ConfigMap data entries for every plain plugin setting. */{{ '}}' }}
{{ '{{' }}- define "buntime.plugins.configEnv" -{{ '}}' }}
{{ '{{' }}- $plugins := .Values.plugins | default dict -{{ '}}' }}
{% for plugin in plugins %}
{% for f in plugin.fields if not f.secret %}
{{ tpl_entry("configEntry", plugin, f) }}
{% endfor %}
{% endfor %}
{{ '{{' }}- end -{{ '}}' }}

{{ '{{' }}/* Secret data entries (base64) for every password/secret plugin setting. */{{ '}}' }}
{{ '{{' }}- define "buntime.plugins.secretEnv" -{{ '}}' }}
{{ '{{' }}- $plugins := .Values.plugins | default dict -{{ '}}' }}
{% for plugin in plugins %}
{% for f in plugin.fields if f.secret %}
{{ tpl_entry("secretEntry", plugin, f) }}
{% endfor %}
{% endfor %}
{{ '{{' }}- end -{{ '}}' }}

{{ '{{' }}/* Secret keys generated when no value is given (generate: true), as a JSON list. */{{ '}}' }}
{{ '{{' }}- define "buntime.plugins.generatedSecrets" -{{ '}}' }}
{{ '{{' }}- list {{ generated | map("json") | join(" ") }} | toJson -{{ '}}' }}
{{ '{{' }}- end -{{ '}}' }}
"""
)

QUESTIONS_TEMPLATE = _ENV.from_string(
    """\
  {{ begin }} (hack/generate-chart.py; edit the manifests, not this block)
{% for plugin in plugins %}
{% for f in plugin.fields if f.type in question_types %}
  - variable: plugins.{{ plugin.key }}.{{ f.dotted }}
    label: {{ f.label | json }}
{% if f.description %}
    description: {{ f.description | json }}
{% endif %}
    type: {{ question_types[f.type] }}
{% if f.values %}
    options: [{{ f.values | map("json") | join(", ") }}]
{% endif %}
    default: {{ (f.default | scalar if f.type in ("int", "bool") else f.default) | string | json }}
    group: {{ (plugin.title ~ " Plugin") | json }}
{% if f.required %}
    required: true
{% endif %}
{% if question_show_if(plugin.key, f) %}
    show_if: {{ question_show_if(plugin.key, f) | json }}
{% endif %}
{% endfor %}
{% endfor %}
  {{ end }}
"""
)


def render_values_block(plugins: list[PluginSpec]) -> str:
    begin, end = VALUES_MARKERS
    return VALUES_TEMPLATE.render(plugins=plugins, begin=begin, end=end)


def render_plugins_tpl(plugins: list[PluginSpec]) -> str:
    generated = [f.env for plugin in plugins for f in plugin.fields if f.generate]
    return PLUGINS_TPL_TEMPLATE.render(plugins=plugins, generated=generated)


def render_questions_block(plugins: list[PluginSpec]) -> str:
    begin, end = QUESTIONS_MARKERS
    return QUESTIONS_TEMPLATE.render(plugins=plugins, begin=begin, end=end, question_types=QUESTION_TYPES)


def _schema_node(tree: Mapping[str, Any], title: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Setting):
            # The runtime's own rules for the value (type, grammar, bounds), from the same field.
            properties[key] = {"description": _field_comment(value), **value.json_schema()}
        else:
            properties[key] = _schema_node(value, f"{title} {key}.*")
    return {
        "description": title,
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }


def render_schema(plugins: list[PluginSpec], current: str, where: str = "values.schema.json") -> str:
    """The schema file with ``properties.plugins`` regenerated and the rest kept as written."""
    try:
        schema = json.loads(current)
    except ValueError as exc:
        raise GeneratorError(f"{where}: invalid JSON: {exc}") from exc
    properties = schema.get("properties")
    if not isinstance(properties, dict) or "plugins" not in properties:
        raise GeneratorError(f"{where}: properties.plugins is missing")
    properties["plugins"] = {
        "description": "Plugin settings, generated from the plugins' manifest.yaml config blocks.",
        "type": "object",
        "additionalProperties": False,
        "properties": {p.key: _schema_node(p.tree(), f"{p.name} settings ({p.manifest}).") for p in plugins},
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def replace_between(text: str, markers: tuple[str, str], block: str, where: str) -> str:
    """Replace the lines from the begin marker to the end marker (both included) with ``block``."""
    lines = text.splitlines(keepends=True)
    begin = [i for i, line in enumerate(lines) if line.strip().startswith(markers[0])]
    end = [i for i, line in enumerate(lines) if line.strip().startswith(markers[1])]
    if len(begin) != 1 or len(end) != 1 or begin[0] > end[0]:
        raise GeneratorError(f"{where}: expected one {markers[0]!r} ... {markers[1]!r} pair")
    return "".join(lines[: begin[0]]) + block + "".join(lines[end[0] + 1 :])


# -- values.yaml documentation ----------------------------------------------------------------------


@dataclass
class ValueDoc:
    """A key of values.yaml with the comment above it."""

    path: tuple[str, ...]
    comment: list[str]
    section: str
    line: int
    children: list[ValueDoc] = field(default_factory=list)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def documented_children(self) -> bool:
        """A key whose children carry comments is a group; otherwise it is one free-form value."""
        return any(child.comment for child in self.children)

    @property
    def description(self) -> str:
        text: list[str] = []
        for line in self.comment:
            if line.startswith(EXAMPLE_MARKER):
                break
            text.append(line)
        return " ".join(" ".join(text).split())


def parse_values_docs(text: str) -> list[ValueDoc]:
    """Every mapping key of values.yaml (block style) with its comment block and docs section.

    List items are part of their key's value: nothing inside them is a documented key.
    """
    roots: list[ValueDoc] = []
    stack: list[tuple[int, ValueDoc]] = []
    comment: list[str] = []
    section = ""
    list_indent: int | None = None  # indent of the list items being skipped
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            if stripped.startswith(SECTION_MARKER):
                section = stripped[len(SECTION_MARKER) :].strip()
                comment = []
            elif not stripped.startswith(("# BEGIN GENERATED", "# END GENERATED")):
                comment.append(stripped.lstrip("#").strip())
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        if list_indent is not None:
            if indent > list_indent or (indent == list_indent and stripped.startswith("-")):
                comment = []
                continue
            list_indent = None
        if stripped.startswith("-"):
            list_indent = indent
            comment = []
            continue
        match = _KEY_LINE.match(raw)
        if match is None:
            raise GeneratorError(f"values.yaml:{number}: cannot parse {stripped!r} (use block style)")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else None
        doc = ValueDoc(
            path=(*(parent.path if parent else ()), match["key"]),
            comment=comment,
            section=section,
            line=number,
        )
        (parent.children if parent else roots).append(doc)
        comment = []
        if not match["rest"].strip():
            stack.append((indent, doc))
    return roots


def iter_values_docs(roots: list[ValueDoc]) -> Iterator[ValueDoc]:
    """The documented values: groups are descended into, free-form keys are one entry."""
    for doc in roots:
        if doc.documented_children:
            yield from iter_values_docs(doc.children)
        else:
            yield doc


def lookup(values: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = values
    for part in path:
        node = node[part]
    return node


def render_docs_table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    begin, end = DOCS_MARKERS
    out = [f"{begin} (hack/generate-chart.py from charts/buntime/values.yaml) -->\n"]
    section = None
    for doc in iter_values_docs(parse_values_docs(values_text)):
        if doc.section != section:
            section = doc.section
            out.append(f"\n### {section}\n\n| Key | Default | Description |\n|---|---|---|\n")
        default = json.dumps(lookup(values, doc.path), separators=(", ", ": "))
        description = doc.description.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        out.append(f"| `{doc.dotted}` | `{default}` | {description} |\n")
    out.append(f"\n{end} -->\n")
    return "".join(out)


# -- CRDs -------------------------------------------------------------------------------------------

CRD_TEMPLATE_HEAD = """\
{{{{- /*
GENERATED by hack/generate-chart.py from {source}: do not edit, edit the source.
A template (not Helm's crds/ folder) so that `helm upgrade` updates it; crds.keep leaves it in
place on uninstall, with every TursoNamespace.
*/ -}}}}
{{{{- if .Values.crds.enabled }}}}
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {name}
  {{{{- if .Values.crds.keep }}}}
  annotations:
    helm.sh/resource-policy: keep
  {{{{- end }}}}
  labels:
    {{{{- include "buntime.labels" (dict "ctx" . "component" "operator") | nindent 4 }}}}
"""


def render_crd_template(text: str, where: str) -> str:
    """The CRD source wrapped into a template: its metadata replaced, its ``spec`` kept verbatim."""
    try:
        crd = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GeneratorError(f"{where}: invalid YAML: {exc}") from exc
    if not isinstance(crd, Mapping) or crd.get("kind") != "CustomResourceDefinition":
        raise GeneratorError(f"{where}: not a CustomResourceDefinition")
    if "{{" in text:
        raise GeneratorError(f"{where}: contains '{{{{', which Helm would read as a template action")
    lines = text.splitlines(keepends=True)
    spec = [i for i, line in enumerate(lines) if line.rstrip() == "spec:"]
    if len(spec) != 1 or set(crd) != {"apiVersion", "kind", "metadata", "spec"}:
        raise GeneratorError(f"{where}: expected apiVersion, kind, metadata and one top-level spec:")
    head = CRD_TEMPLATE_HEAD.format(source=where, name=crd["metadata"]["name"])
    return head + "".join(lines[spec[0] :]) + "{{- end }}\n"


# -- main -------------------------------------------------------------------------------------------


def build(paths: Paths) -> dict[Path, str]:
    """Every generated file's wanted content (partial files are read and their block replaced)."""
    plugins = load_plugins(paths)
    for path in (paths.values, paths.schema, paths.questions, paths.docs, paths.readme):
        if not path.is_file():
            raise GeneratorError(f"{paths.show(path)} is missing")
    values = replace_between(
        paths.values.read_text(encoding="utf-8"),
        VALUES_MARKERS,
        render_values_block(plugins),
        paths.show(paths.values),
    )
    questions = replace_between(
        paths.questions.read_text(encoding="utf-8"),
        QUESTIONS_MARKERS,
        render_questions_block(plugins),
        paths.show(paths.questions),
    )
    docs = replace_between(
        paths.docs.read_text(encoding="utf-8"),
        DOCS_MARKERS,
        render_docs_table(values),
        paths.show(paths.docs),
    )
    readme = replace_between(
        paths.readme.read_text(encoding="utf-8"),
        DOCS_MARKERS,
        render_docs_table(values),
        paths.show(paths.readme),
    )
    schema = render_schema(plugins, paths.schema.read_text(encoding="utf-8"), paths.show(paths.schema))
    crds = {
        paths.crd_template(source): render_crd_template(
            source.read_text(encoding="utf-8"), paths.show(source)
        )
        for source in sorted(paths.crd_sources.glob("*.yaml"))
    }
    return {
        **crds,
        paths.values: values,
        paths.plugins_tpl: render_plugins_tpl(plugins),
        paths.schema: schema,
        paths.questions: questions,
        paths.docs: docs,
        paths.readme: readme,
    }


def stale_files(wanted: Mapping[Path, str]) -> list[Path]:
    return [p for p, content in wanted.items() if not p.is_file() or p.read_text(encoding="utf-8") != content]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to work on (default: this one)")
    args = parser.parse_args(argv)
    paths = Paths(args.root.resolve())
    try:
        wanted = build(paths)
    except GeneratorError as exc:
        print(f"generate-chart: {exc}", file=sys.stderr)
        return 2
    stale = stale_files(wanted)
    if args.check:
        for path in stale:
            print(f"stale: {paths.show(path)}", file=sys.stderr)
        if stale:
            print("run: python hack/generate-chart.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path], encoding="utf-8")
        print(f"wrote {paths.show(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
