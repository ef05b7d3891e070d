"""Lays out a rendered container as Kubernetes would run it.

For one container of a rendered workload this writes, under a directory of
its own, every volume it mounts (ConfigMap and Secret files from the
rendering, with their items, modes and fsGroup ownership as the kubelet sets
them; emptyDirs; PersistentVolumeClaims as directories shared by claim name)
and resolves its command line and environment (values, secretKeyRef,
configMapKeyRef, fieldRef, `$(VAR)` expansion).

The one liberty taken: mount paths are absolute (`/etc/boutique-orders/...`)
and a test cannot mount there, so every mount path is moved under the
directory, and every occurrence of a mount path in the command line, the
environment and the mounted ConfigMap files is rewritten the same way. Secret
files are written byte for byte. A file a Secret or ConfigMap of the
rendering does not hold (a Secret the operator or another controller
creates) gets placeholder content, and is listed as such.

Command line (used by bins/checkout/tests/chart.rs):

    python ci/podtree.py OUT [CASE] [--set-json JSON]

writes OUT/<component>-<container>/{argv,env,image,placeholders} (NUL-separated
argv and KEY=VALUE env) and OUT/<component>-<container>/root/... for the
containers of the checkout Deployment, migrator Job, backup CronJob, restore
Job, helm test Pod and the bundled PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import sys
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import chart  # noqa: E402

VOLUMES = "volumes"  # shared directory of PersistentVolumeClaims under the tree


@dataclass
class Container:
    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    root: pathlib.Path
    mounts: list[tuple[str, pathlib.Path]] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)

    def rewrite(self, text: str) -> str:
        return rewrite(text, self.mounts)


def rewrite(text: str, mounts: list[tuple[str, pathlib.Path]]) -> str:
    """Every mount path in `text` (as a whole path component) moved to its
    directory, in one pass (a moved path is never moved again)."""
    if not mounts:
        return text
    ordered = sorted(mounts, key=lambda m: -len(m[0]))
    table = dict(ordered)
    pattern = re.compile(
        r"(?:(?<=file://)|(?<![\w./-]))(" + "|".join(re.escape(m) for m, _ in ordered) + r")(?=/|$|[\s'\",;:=)])"
    )
    return pattern.sub(lambda m: str(table[m.group(1)]), text)


def _secret_data(obj: dict[str, Any]) -> dict[str, bytes]:
    data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    return data


def _configmap_data(obj: dict[str, Any]) -> dict[str, bytes]:
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


class Tree:
    """Materialises containers of one rendering under `out`."""

    def __init__(self, objs: list[dict[str, Any]], out: pathlib.Path, gid_map: dict[int, int] | None = None):
        self.objs = objs
        self.out = out
        self.gid_map = gid_map or {}
        self.secrets = {o["metadata"]["name"]: _secret_data(o) for o in chart.find(objs, "Secret")}
        self.configmaps = {o["metadata"]["name"]: _configmap_data(o) for o in chart.find(objs, "ConfigMap")}

    def _lookup(self, kind: str, name: str, key: str, holder: Container) -> tuple[bytes, bool]:
        store = self.secrets if kind == "secret" else self.configmaps
        if name in store and key in store[name]:
            return store[name][key], False
        holder.placeholders.append(f"{kind}/{name}/{key}")
        return f"placeholder for {kind} {name} key {key}\n".encode(), True

    def _write(self, path: pathlib.Path, content: bytes, mode: int, fs_group: int | None, text: bool, holder: Container):
        path.parent.mkdir(parents=True, exist_ok=True)
        if text:
            content = holder.rewrite(content.decode()).encode()
        path.write_bytes(content)
        # The kubelet: files of ConfigMap, Secret and projected volumes belong
        # to root; with fsGroup, to the group fsGroup, and group-readable.
        if fs_group is not None:
            mode |= 0o440
        if os.geteuid() == 0:
            os.chown(path, 0, self.gid_map.get(fs_group, fs_group) if fs_group is not None else 0)
        os.chmod(path, mode)

    def container(self, workload: dict[str, Any], container_name: str, directory: str) -> Container:
        spec = chart.pod_spec(workload)
        assert spec is not None, workload["kind"]
        c = next(c for c in chart.containers(spec) if c["name"] == container_name)
        root = self.out / directory / "root"
        root.mkdir(parents=True, exist_ok=True)
        holder = Container(container_name, c["image"], [], {}, root)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        if workload["kind"] == "StatefulSet":
            for t in workload["spec"].get("volumeClaimTemplates", []):
                claim = f'{t["metadata"]["name"]}-{workload["metadata"]["name"]}-0'
                volumes[t["metadata"]["name"]] = {"name": t["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim}}
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")

        # Mount paths first: file contents are rewritten with all of them.
        for m in c.get("volumeMounts", []):
            volume = volumes[m["name"]]
            if "persistentVolumeClaim" in volume:
                directory_ = self.out / VOLUMES / volume["persistentVolumeClaim"]["claimName"]
            else:
                directory_ = root / m["mountPath"].lstrip("/")
            directory_.mkdir(parents=True, exist_ok=True)
            holder.mounts.append((m["mountPath"], directory_))
        for m, (_, directory_) in zip(c.get("volumeMounts", []), holder.mounts):
            volume = volumes[m["name"]]
            self._fill(volume, directory_, fs_group, holder)

        env: dict[str, str] = {}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
            else:
                ref = e["valueFrom"]
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    env[e["name"]] = self._lookup("secret", r["name"], r["key"], holder)[0].decode()
                elif "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    env[e["name"]] = self._lookup("configmap", r["name"], r["key"], holder)[0].decode()
                elif "fieldRef" in ref:
                    path = ref["fieldRef"]["fieldPath"]
                    env[e["name"]] = {
                        "metadata.namespace": chart.NAMESPACE,
                        "metadata.name": workload["metadata"]["name"],
                        "status.podIP": "127.0.0.1",
                    }.get(path, "")
                else:
                    raise AssertionError(f"unsupported env source {ref}")
        assert not c.get("envFrom"), "envFrom is not used by this chart"
        holder.env = {k: holder.rewrite(v) for k, v in env.items()}
        argv = [expand(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
        holder.argv = [holder.rewrite(a) for a in argv]
        return holder

    def _fill(self, volume: dict[str, Any], directory: pathlib.Path, fs_group: int | None, holder: Container):
        if "configMap" in volume or "secret" in volume:
            kind = "configmap" if "configMap" in volume else "secret"
            source = volume.get("configMap") or volume["secret"]
            name = source.get("name") or source.get("secretName")
            self._items(kind, name, source, source.get("defaultMode", 0o644), directory, fs_group, holder)
        elif "projected" in volume:
            default = volume["projected"].get("defaultMode", 0o644)
            for s in volume["projected"]["sources"]:
                kind = "configmap" if "configMap" in s else "secret"
                source = s.get("configMap") or s["secret"]
                self._items(kind, source["name"], source, default, directory, fs_group, holder)
        elif "emptyDir" in volume or "persistentVolumeClaim" in volume:
            if fs_group is not None and os.geteuid() == 0:
                os.chown(directory, 0, self.gid_map.get(fs_group, fs_group))
                os.chmod(directory, 0o2775)
        else:
            raise AssertionError(f"unsupported volume {volume}")

    def _items(self, kind, name, source, default_mode, directory, fs_group, holder):
        items = source.get("items")
        if items is None:
            store = self.secrets if kind == "secret" else self.configmaps
            assert name in store, f"{kind} {name} is mounted whole but not rendered: list its items"
            items = [{"key": k, "path": k} for k in store[name]]
        for item in items:
            content, _ = self._lookup(kind, name, item["key"], holder)
            self._write(directory / item["path"], content, item.get("mode", default_mode), fs_group,
                        kind == "configmap", holder)


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion (`$$` escapes; unknown names stay)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def workloads(objs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """(workload, container, directory name) of every container the chart runs."""
    out = []
    for o in objs:
        spec = chart.pod_spec(o)
        if spec is None:
            continue
        component = chart.pod_labels(o).get("app.kubernetes.io/component", o["metadata"]["name"])
        for c in chart.containers(spec):
            out.append((o, c["name"], f"{component}-{c['name']}"))
    return out


def main(argv: list[str]) -> int:
    out = pathlib.Path(argv[1])
    case = argv[2] if len(argv) > 2 and not argv[2].startswith("--") else "defaults"
    values = chart.load_case(case)
    if "--set-json" in argv:
        extra = json.loads(argv[argv.index("--set-json") + 1])
        values = deep_merge(values, extra)
    gid_map = {}
    if "--gid-map" in argv:
        for pair in argv[argv.index("--gid-map") + 1].split(","):
            a, b = pair.split("=")
            gid_map[int(a)] = int(b)
    objs = chart.objects(chart.render(values))
    tree = Tree(objs, out, gid_map)
    for workload, name, directory in workloads(objs):
        c = tree.container(workload, name, directory)
        base = out / directory
        (base / "argv").write_bytes(b"\0".join(a.encode() for a in c.argv))
        (base / "env").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in c.env.items()))
        (base / "image").write_text(c.image)
        (base / "placeholders").write_text("\n".join(c.placeholders))
    return 0


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv))
