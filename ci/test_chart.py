"""The chart suite, run by `cargo xtask test` (ci/run-chart-suite.sh).

The chart is rendered by Helm's own engine (helm-python-sdk), linted, and
every object of every matrix case (ci/cases/*.yaml) is validated strictly
against the Kubernetes schemas of 1.28 to 1.34 (kubernetes-validate) or the
CRD schemas of ci/crds/. The rest asserts what the chart promises.
"""

from __future__ import annotations

import base64
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cryptography import x509

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import chart  # noqa: E402
import podtree  # noqa: E402

CASES = chart.case_names()
KUBE_VERSIONS = [f"1.{minor}.0" for minor in range(28, 35)]
OUR_IMAGE = "boutique-orders:"
DB_CLIENTS = {"checkout", "migrator", "backup", "restore", "test"}


@pytest.fixture(scope="module")
def rendered():
    return {case: chart.render(chart.load_case(case)) for case in CASES}


def objs_of(rendered, case):
    return chart.objects(rendered[case])


# ------------------------------------------------------------------ lint


@pytest.mark.parametrize("case", CASES)
def test_lint_is_clean(case):
    report = helm.lint(chart.CHART, chart.load_case(case), strict=True, namespace=chart.NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert not problems, problems


# ------------------------------------------------------------ validation


def crd_schemas():
    schemas = {}
    for path in (chart.ROOT / "ci" / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f'{crd["spec"]["group"]}/{version["name"]}', crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def strict(schema):
    """A CRD schema as the API server's strict field validation applies it:
    undeclared fields are errors unless x-kubernetes-preserve-unknown-fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        if schema.get("x-kubernetes-int-or-string"):
            out = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    return schema


CRDS = {key: strict(schema) for key, schema in crd_schemas().items()}


@pytest.mark.parametrize("case", CASES)
def test_every_object_validates(rendered, case):
    import jsonschema

    objs = objs_of(rendered, case)
    assert objs
    for obj in objs:
        key = (obj["apiVersion"], obj["kind"])
        if key in CRDS:
            jsonschema.validate(obj, CRDS[key])
            continue
        assert "." not in obj["apiVersion"].split("/")[0] or obj["apiVersion"].split("/")[0].endswith(".k8s.io"), (
            f"{key} is a custom resource without a CRD schema in ci/crds"
        )
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_crd_objects_are_checked(rendered):
    kinds = {(o["apiVersion"], o["kind"]) for case in CASES for o in objs_of(rendered, case)}
    assert ("postgresql.cnpg.io/v1", "Cluster") in kinds
    assert ("cert-manager.io/v1", "Certificate") in kinds
    assert ("cert-manager.io/v1", "Issuer") in kinds
    with pytest.raises(Exception):
        import jsonschema

        bad = chart.one(objs_of(rendered, "cloudnativepg"), "Cluster")
        bad["spec"]["instace"] = 1
        jsonschema.validate(bad, CRDS[("postgresql.cnpg.io/v1", "Cluster")])


# ---------------------------------------------------------------- schema


@pytest.mark.parametrize(
    "values, key, words",
    [
        ({"database": {"sslmod": "verify-full"}}, "/database", "sslmod"),
        ({"checkout": {"replicas": "two"}}, "/checkout/replicas", "want integer"),
        ({"checkout": {"port": 70000}}, "/checkout/port", "maximum"),
        ({"backup": {"destination": {"type": "ftp"}}}, "/backup/destination/type", "pvc"),
        ({"backup": {"retention": {"age": "a month"}}}, "/backup/retention/age", "pattern"),
        ({"postgresql": {"tls": {"mode": "self"}}}, "/postgresql/tls/mode", "generated"),
        ({"database": {"sslmode": "prefer"}}, "/database/sslmode", "verify-full"),
        ({"database": {"sslmode": "disable"}}, "/database/allowPlaintext", "true"),
        ({"database": {"roles": {"checkout": "Robert'); DROP"}}}, "/database/roles/checkout", "pattern"),
        ({"telemetry": {"tracing": {"enabled": "yes"}}}, "/telemetry/tracing/enabled", "boolean"),
        ({"checkout": {"downstream": {"cart": "cartservice"}}}, "/checkout/downstream/cart", "pattern"),
        ({"networkPolicy": {"enabled": True, "egress": False}}, "/networkPolicy", "egress"),
        ({"tyop": 1}, "", "tyop"),
    ],
)
def test_schema_rejects_typos_and_wrong_types_naming_the_key(values, key, words):
    with pytest.raises(helm.HelmValuesError) as error:
        chart.render(values)
    message = str(error.value)
    assert f"at '{key}" in message, message
    assert words in message, message


def test_plaintext_needs_an_external_database_and_explicit_consent(rendered):
    with pytest.raises(helm.HelmValuesError):
        chart.render({"database": {"sslmode": "disable", "allowPlaintext": True}})
    text = chart.notes(rendered["external-plaintext"])
    assert "WARNING" in text and "clear text" in text


# ------------------------------------------------------- secrets & safety


def secret_values(objs):
    values = set()
    for s in chart.find(objs, "Secret"):
        for v in (s.get("data") or {}).values():
            decoded = base64.b64decode(v).decode(errors="replace").strip()
            if len(decoded) >= 8:
                values.add(decoded)
                values.update(line for line in decoded.splitlines() if len(line) >= 40)
    return values


@pytest.mark.parametrize("case", CASES)
def test_no_secret_material_in_configmaps_annotations_or_env(rendered, case):
    objs = objs_of(rendered, case)
    secrets = secret_values(objs)
    for obj in objs:
        places = [yaml.safe_dump(obj["metadata"].get("annotations") or {})]
        if obj["kind"] == "ConfigMap":
            places.append(yaml.safe_dump(obj.get("data") or {}))
            assert "PRIVATE KEY" not in places[-1]
            for name, text in (obj.get("data") or {}).items():
                if name.endswith(".toml"):
                    parsed = tomllib.loads(text)
                    for section in parsed.values():
                        for k in section:
                            assert not re.search(r"(password|secret|key_id)$", k), f"{name}: {k}"
        spec = chart.pod_spec(obj)
        if spec:
            for c in chart.containers(spec):
                for e in c.get("env", []):
                    if "value" in e:
                        places.append(e["value"])
                        assert not re.search(r"PASSWORD$|SECRET|TOKEN|DATABASE_URL", e["name"]), e
            tmpl_ann = (obj.get("spec", {}).get("template", {}).get("metadata", {}) or {}).get("annotations")
            places.append(yaml.safe_dump(tmpl_ann or {}))
        text = "\n".join(places)
        for secret in secrets:
            assert secret not in text, f"{obj['kind']} {obj['metadata']['name']} holds secret material"


@pytest.mark.parametrize("case", CASES)
def test_every_container_is_locked_down_and_requests_resources(rendered, case):
    for obj in objs_of(rendered, case):
        spec = chart.pod_spec(obj)
        if spec is None:
            continue
        pod = spec.get("securityContext") or {}
        assert pod.get("runAsNonRoot") is True, obj["metadata"]["name"]
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert spec.get("automountServiceAccountToken") is False
        for c in chart.containers(spec):
            sc = c.get("securityContext") or {}
            where = f'{obj["metadata"]["name"]}/{c["name"]}'
            assert sc.get("runAsNonRoot") is True, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            requests = (c.get("resources") or {}).get("requests") or {}
            assert "cpu" in requests and "memory" in requests, where


# ------------------------------------------------------------------ TLS


def configs(objs):
    cm = next(o for o in chart.find(objs, "ConfigMap") if o["metadata"]["name"].endswith("-config"))
    return {k: tomllib.loads(v) for k, v in cm["data"].items()}


@pytest.mark.parametrize("case", CASES)
def test_every_database_connection_uses_tls(rendered, case):
    values = chart.load_case(case)
    asked = values.get("database", {}).get("sslmode", "verify-full")
    for name, config in configs(objs_of(rendered, case)).items():
        db = config["database"]
        assert db["sslmode"] == asked, name
        if asked == "disable":
            assert values["database"]["allowPlaintext"] is True
            continue
        assert db["sslmode"] in ("verify-full", "require", "verify-ca")
        if db["sslmode"] != "require":
            assert db["sslrootcert"].endswith("/ca.crt")


def test_generated_server_certificate_names_the_service_and_chains_to_the_ca(rendered):
    objs = objs_of(rendered, "defaults")
    tls = chart.one(objs, "Secret", "shop-boutique-orders-postgres-tls")
    cert = x509.load_pem_x509_certificate(base64.b64decode(tls["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(base64.b64decode(tls["data"]["ca.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    host = configs(objs)["checkout.toml"]["database"]["host"]
    assert host in names and f"{host}.{chart.NAMESPACE}.svc" in names and "localhost" in names
    cert.verify_directly_issued_by(ca)
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 360 <= days <= 366
    not_after = int(tls["metadata"]["annotations"]["boutique-orders.io/not-after"])
    assert abs(not_after - cert.not_valid_after_utc.timestamp()) < 3600


def test_postgres_accepts_tls_only_and_its_key_permissions():
    objs = chart.objects(chart.render({}))
    cm = chart.one(objs, "ConfigMap", "shop-boutique-orders-postgres")
    hba = [line.split() for line in cm["data"]["pg_hba.conf"].splitlines() if line.strip() and not line.startswith("#")]
    assert {line[0] for line in hba} <= {"local", "hostssl"}, hba
    conf = cm["data"]["postgresql.conf"]
    assert "ssl = on" in conf and "password_encryption = 'scram-sha-256'" in conf
    sts = chart.one(objs, "StatefulSet", "postgres")
    spec = sts["spec"]["template"]["spec"]
    tls = next(v for v in spec["volumes"] if v["name"] == "tls")
    # root-owned (a Secret volume), group fsGroup: PostgreSQL accepts at most 0640.
    assert tls["secret"]["defaultMode"] & 0o137 == 0
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"] == 999
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "5Gi" and "storageClassName" not in claim
    fast = chart.one(objs_of_case("cert-manager-issuer"), "StatefulSet", "postgres")
    assert fast["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-ssd"


def objs_of_case(case):
    return chart.objects(chart.render(chart.load_case(case)))


def test_cloudnativepg_clients_get_verify_full_with_the_cluster_ca(rendered):
    objs = objs_of(rendered, "cloudnativepg")
    cluster = chart.one(objs, "Cluster")
    name = cluster["metadata"]["name"]
    assert "hostnossl all all all reject" in cluster["spec"]["postgresql"]["pg_hba"]
    for config in configs(objs).values():
        assert config["database"]["host"] == f"{name}-rw"
        assert config["database"]["sslmode"] == "verify-full"
    sources = [
        s["secret"]["name"]
        for o in objs
        if chart.pod_spec(o)
        for v in chart.pod_spec(o).get("volumes", [])
        if "projected" in v
        for s in v["projected"]["sources"]
    ]
    assert f"{name}-ca" in sources and f"{name}-app" in sources


# ----------------------------------------------------------------- hooks


@pytest.mark.parametrize("case", CASES)
def test_install_has_no_pre_or_post_install_hooks(rendered, case):
    for obj in objs_of(rendered, case):
        hook = (obj["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
        assert hook in ("", "test"), f'{obj["kind"]} {obj["metadata"]["name"]}: {hook}'
    jobs = [j for j in chart.find(objs_of(rendered, case), "Job") if "migrate" in j["metadata"]["name"]]
    assert len(jobs) == 1, "install runs the migrator as a Job of the release"


@pytest.mark.parametrize("case", ["existing-secret", "external", "cloudnativepg"])
def test_upgrade_migrates_in_a_pre_upgrade_hook_with_this_revisions_settings(case):
    # Without a cluster, only an existingSecret renders as an upgrade.
    values = podtree.deep_merge(chart.load_case(case), {"database": {"existingSecret": "orders-db"}})
    objs = chart.objects(chart.render(values, upgrade=True))
    hooks = {
        (o["kind"], o["metadata"]["name"]): o["metadata"]["annotations"]
        for o in objs
        if (o["metadata"].get("annotations") or {}).get("helm.sh/hook")
    }
    job = hooks[("Job", "shop-boutique-orders-migrate")]
    cm = hooks[("ConfigMap", "shop-boutique-orders-migrator-upgrade")]
    assert job["helm.sh/hook"] == cm["helm.sh/hook"] == "pre-upgrade"
    assert int(cm["helm.sh/hook-weight"]) < int(job["helm.sh/hook-weight"])
    assert "before-hook-creation" in job["helm.sh/hook-delete-policy"]
    assert not any("post-" in a["helm.sh/hook"] for a in hooks.values())
    upgrade_cm = chart.one(objs, "ConfigMap", "shop-boutique-orders-migrator-upgrade")
    assert upgrade_cm["data"]["migrator.toml"] == configs_raw(objs)["migrator.toml"]
    spec = chart.one(objs, "Job", "shop-boutique-orders-migrate")["spec"]["template"]["spec"]
    assert next(v for v in spec["volumes"] if v["name"] == "config")["configMap"]["name"] == upgrade_cm["metadata"]["name"]


def configs_raw(objs):
    return next(o for o in chart.find(objs, "ConfigMap") if o["metadata"]["name"].endswith("-config"))["data"]


def test_upgrade_never_silently_regenerates_passwords():
    with pytest.raises(helm.HelmRenderError) as error:
        chart.render({}, upgrade=True)
    assert "db-credentials" in str(error.value) and "existingSecret" in str(error.value)


def test_checkout_waits_for_the_schema_and_keeps_old_pods_serving(rendered):
    deploy = chart.one(objs_of(rendered, "defaults"), "Deployment", "checkoutservice")
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["grpc"] == {"port": 5050}
    assert c["livenessProbe"]["tcpSocket"] == {"port": 5050}
    assert c["startupProbe"]["tcpSocket"] == {"port": 5050}


def test_helm_test_hook(rendered):
    pod = chart.one(objs_of(rendered, "defaults"), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["args"][-1] == "verify"


# ------------------------------------------------------------- checkout


def test_checkout_keeps_online_boutiques_identity(rendered):
    objs = objs_of(rendered, "defaults")
    svc = chart.one(objs, "Service", "checkoutservice")
    assert svc["spec"]["ports"][0]["port"] == 5050
    deploy = chart.one(objs, "Deployment", "checkoutservice")
    assert deploy["spec"]["template"]["metadata"]["labels"]["app"] == "checkoutservice"
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "checkoutservice"
    chart.one(objs, "ServiceAccount", "checkoutservice")
    assert chart.one(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert not chart.find(objs, "HorizontalPodAutoscaler")
    assert deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
    hpa_objs = objs_of(rendered, "hpa")
    hpa = chart.one(hpa_objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 12 and len(hpa["spec"]["metrics"]) == 2
    assert "replicas" not in chart.one(hpa_objs, "Deployment")["spec"]


def test_tracing_values_reach_every_binary(rendered):
    for config in configs(objs_of(rendered, "tracing")).values():
        t = config["telemetry"]
        assert t["tracing_enabled"] is True
        assert t["collector_addr"] == "http://otel-collector.observability:4317"
        assert t["service_name"] == "checkoutservice"


# --------------------------------------------------------------- backups


@pytest.mark.parametrize("case", ["defaults", "backup-pvc", "backup-s3", "backup-s3-irsa"])
def test_backup_cronjob(rendered, case):
    objs = objs_of(rendered, case)
    cron = chart.one(objs, "CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    assert spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["initContainers"][0]["args"][-1] == "run" and pod["containers"][0]["args"][-1] == "prune"
    backup = configs(objs)["backup.toml"]["backup"]
    if "s3" in case:
        assert backup["destination"].startswith("s3://shop-backups")
    else:
        assert backup["destination"] == "file:///backups"
        pvc = next(v for v in pod["volumes"] if v["name"] == "backups")
        claim = chart.one(objs, "PersistentVolumeClaim")
        assert pvc["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    if case == "backup-s3":
        assert backup["s3_secret_access_key_file"].endswith("/s3-secret-access-key")
        assert backup["s3_endpoint"] == "https://minio.storage.svc:9000"


def test_restore_job(rendered):
    objs = objs_of(rendered, "restore")
    job = next(j for j in chart.find(objs, "Job") if "restore" in j["metadata"]["name"])
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-3:] == ["restore", "orders-20260101T031700Z", "--replace"]
    assert configs(objs)["restore.toml"]["database"]["user"] == "orders_owner"


# ------------------------------------------------------ network policies


def selects(selector, labels):
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
    return True


@pytest.mark.parametrize("case", ["defaults", "backup-s3", "network-policies", "tracing", "cloudnativepg"])
def test_network_policies(rendered, case):
    objs = objs_of(rendered, case)
    policies = chart.find(objs, "NetworkPolicy")
    pods = [(o, chart.pod_labels(o)) for o in objs if chart.pod_spec(o)]
    db = next(p for p in policies if p["metadata"]["name"].endswith("-postgres"))
    allowed = {
        labels.get("app.kubernetes.io/component")
        for _, labels in pods
        if any(selects(peer["podSelector"], labels) for peer in db["spec"]["ingress"][0]["from"])
    }
    assert allowed <= DB_CLIENTS and {"checkout", "migrator", "backup"} <= allowed, allowed
    for p in policies:
        if "Egress" in p["spec"]["policyTypes"] and p["spec"].get("egress"):
            ports = [port for rule in p["spec"]["egress"] for port in rule.get("ports", [])]
            assert {"protocol": "UDP", "port": 53} in ports, p["metadata"]["name"]
    checkout = next(p for p in policies if p["metadata"]["name"].endswith("-checkout"))
    peers = checkout["spec"]["ingress"][0]["from"]
    assert any((peer.get("podSelector") or {}).get("matchLabels", {}).get("app") == "frontend" for peer in peers)
    if case == "backup-s3":
        backup = next(p for p in policies if p["metadata"]["name"].endswith("-backup"))
        ports = {port["port"] for rule in backup["spec"]["egress"] for port in rule.get("ports", [])}
        assert {443, 9000, 5432, 53} <= ports


# ------------------------------------------------------------ the binaries


def binary(name):
    """A binary of this workspace (built by the cargo step before this suite)."""
    path = chart.ROOT / "target" / "debug" / name
    assert path.exists(), f"{path} missing: cargo build --workspace --bins (cargo xtask test does)"
    return path


@pytest.mark.parametrize("case", CASES)
def test_the_binaries_understand_every_rendered_configuration(tmp_path, case):
    objs = chart.objects(chart.render(chart.load_case(case)))
    tree = podtree.Tree(objs, tmp_path)
    checked = 0
    for workload, name, directory in podtree.workloads(objs):
        c = tree.container(workload, name, directory)
        if not c.image.startswith(OUR_IMAGE):
            continue
        program = binary(pathlib.Path(c.argv[0]).name)
        # The same flags, the `config` subcommand: loads every layer, connects to nothing.
        flags = c.argv[1:3]
        assert flags[0] == "--config"
        result = subprocess.run(
            [str(program), *flags, "config"],
            env={"PATH": os.environ["PATH"], **c.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{directory}: {result.stderr}"
        checked += 1
    assert checked >= 2


# ------------------------------------------------------------ docs & image


def leaf_keys(values, prefix=""):
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("config", "parameters", "resources", "commonLabels", "readinessProbe", "livenessProbe", "startupProbe"):
            yield from leaf_keys(value, path + ".")
        else:
            yield path


def test_readme_documents_every_value():
    readme = (chart.CHART / "README.md").read_text()
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    missing = [k for k in leaf_keys(values) if f"`{k}`" not in readme]
    assert not missing, missing


def test_notes_tell_how_to_see_the_saved_orders(rendered):
    text = chart.notes(rendered["defaults"])
    assert "psql -U orderservice -d ordersdb" in text and "FROM orders" in text


def test_dockerfile_passes_hadolint():
    hadolint = pathlib.Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(chart.ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
