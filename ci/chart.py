"""Rendering the chart with Helm's own engine (helm-python-sdk, Helm v4).

Shared by the chart suite (ci/test_chart.py) and the rendered-chart test
that drives the real binaries (ci/podtree.py, called from
bins/checkout/tests/chart.rs).
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "boutique-orders"
CASES = ROOT / "ci" / "cases"
RELEASE = "shop"
NAMESPACE = "boutique"


def load_case(name: str) -> dict[str, Any]:
    """The values of a matrix case, ci/cases/NAME.yaml (empty for defaults)."""
    if name == "defaults":
        return {}
    with open(CASES / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def case_names() -> list[str]:
    return ["defaults"] + sorted(p.stem for p in CASES.glob("*.yaml"))


def render(
    values: dict[str, Any] | None = None,
    *,
    upgrade: bool = False,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` (or `helm upgrade`
    without a cluster, `upgrade=True`) would render it. Values are checked
    against values.schema.json first, as Helm does on install."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(copy.deepcopy(values or {}))
        return chart.render(
            copy.deepcopy(values or {}),
            name=release,
            namespace=namespace,
            revision=2 if upgrade else 1,
            is_install=not upgrade,
            is_upgrade=upgrade,
        )


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a rendering (NOTES.txt excluded)."""
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                out.append(doc)
    return out


def notes(rendered: dict[str, str]) -> str:
    return next((t for p, t in rendered.items() if p.endswith("NOTES.txt")), "")


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in objs
        if o.get("kind") == kind and (name is None or o["metadata"].get("name") == name)
    ]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload object, or None."""
    kind = obj.get("kind")
    if kind == "Pod":
        return obj["spec"]
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    kind = obj.get("kind")
    if kind == "Pod":
        return obj["metadata"].get("labels", {})
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))
