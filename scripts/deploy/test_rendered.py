"""Tests on the rendered chart and overlays (run by scripts/validate-deploy.sh, with pytest).

They read what Kubernetes would get: every agent in values has its own Deployment wired to
the NATS settings, its own ScaledObject naming consumer baton-agent-<agent>; turning KEDA off
removes them; bad values are refused by values.schema.json at install; probes, ports and
mounted secrets agree with each other.
"""

from __future__ import annotations

import functools
import json
import pathlib
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import render_helm  # noqa: E402
import validate  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = str(ROOT / "helm/baton")
PROD = yaml.safe_load((ROOT / "helm/baton/ci/prod-values.yaml").read_text())


@functools.lru_cache(maxsize=None)
def _render(values_json: str) -> tuple:
    manifest, notes = render_helm.render(CHART, json.loads(values_json))
    return tuple(d for d in yaml.safe_load_all(manifest) if d), notes


def render(values: dict | None = None) -> list[dict]:
    return list(_render(json.dumps(values or {}, sort_keys=True))[0])


def notes(values: dict | None = None) -> str:
    return _render(json.dumps(values or {}, sort_keys=True))[1]


def objects(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(container) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def mounted_file(pod_spec, container, path) -> tuple[str, str]:
    """The (Secret or ConfigMap name, key) that a file path in the container comes from."""
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
            source = volume.get("secret", {}).get("secretName") or volume.get("configMap", {}).get("name")
            assert source, f"{path} is on volume {mount['name']}, which is neither Secret nor ConfigMap"
            return source, path[len(prefix):]
    raise AssertionError(f"{path} is not on any mounted volume of {container['name']}")


AGENTS = {"nlu": {}, "sql": {"concurrency": 4},
          "summarise-v2": {"image": {"repository": "baton-agent-sim"}}}
KEDA_VALUES = {
    # Helm merges maps with the chart's defaults: null removes a default agent type,
    # enabled: false turns one off.
    "workers": {**AGENTS, "rag": None, "answer": {"enabled": False}},
    "nats": {"url": "nats://n1:4222,nats://n2:4222",
             "auth": {"type": "creds", "existingSecret": "nats-creds", "credsKey": "baton.creds"},
             "tls": {"enabled": True, "existingSecret": "nats-ca", "caKey": "ca.pem"}},
    "autoscaling": {"keda": {"enabled": True, "account": "BATON"}},
}


def test_every_render_validates_strictly():
    for values in ({}, PROD, KEDA_VALUES):
        for doc in render(values):
            assert validate.validate_object(doc, "1.30") == [], doc["metadata"]["name"]


def test_each_agent_gets_its_own_deployment_wired_to_nats():
    docs = render(KEDA_VALUES)
    deployments = objects(docs, "Deployment")
    for agent, spec in AGENTS.items():
        d = deployments[f"baton-agent-{agent}"]
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = env_of(c)
        assert env["BATON_AGENT_TYPE"] == agent
        assert env["BATON_NATS_URL"] == "nats://n1:4222,nats://n2:4222"
        assert env["BATON_CONCURRENCY"] == str(spec.get("concurrency", 16))
        assert mounted_file(pod, c, env["BATON_NATS_CREDS"]) == ("nats-creds", "baton.creds")
        assert mounted_file(pod, c, env["BATON_NATS_TLS_CA"]) == ("nats-ca", "ca.pem")
        repo = spec.get("image", {}).get("repository", f"baton-agent-{agent}")
        assert c["image"].startswith(repo + ":")
        # Workers never get Redis settings.
        assert not [k for k in env if "REDIS" in k]
        # KEDA owns the replica count.
        assert "replicas" not in d["spec"]
        # The drain fits in the grace period.
        assert pod["terminationGracePeriodSeconds"] > int(env["BATON_DRAIN_TIMEOUT_SECS"])
    assert len([d for d in deployments if d.startswith("baton-agent-")]) == len(AGENTS)


def test_each_agent_gets_a_scaled_object_on_its_consumer():
    docs = render(KEDA_VALUES)
    scaled = objects(docs, "ScaledObject")
    assert set(scaled) == {f"baton-agent-{a}" for a in AGENTS}
    for agent, spec in AGENTS.items():
        so = scaled[f"baton-agent-{agent}"]
        assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": f"baton-agent-{agent}"}
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert meta["consumer"] == f"baton-agent-{agent}"
        assert meta["stream"] == "BATON_TASKS"
        assert meta["account"] == "BATON"
        assert meta["lagThreshold"] == str(spec.get("concurrency", 16))


def test_account_defaults_to_the_global_account():
    values = {"autoscaling": {"keda": {"enabled": True}}}
    for so in objects(render(values), "ScaledObject").values():
        assert so["spec"]["triggers"][0]["metadata"]["account"] == "$G"


def test_disabling_keda_removes_the_scaled_objects():
    values = json.loads(json.dumps(KEDA_VALUES))
    values["autoscaling"]["keda"]["enabled"] = False
    docs = render(values)
    assert objects(docs, "ScaledObject") == {}
    assert objects(docs, "HorizontalPodAutoscaler") == {}
    for name, d in objects(docs, "Deployment").items():
        assert d["spec"]["replicas"] >= 1, name


def test_hpa_alternative():
    docs = render({"autoscaling": {"hpa": {"enabled": True, "maxReplicas": 7}}})
    hpas = objects(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {f"baton-agent-{a}" for a in ("nlu", "sql", "rag", "answer")}
    assert all(h["spec"]["maxReplicas"] == 7 for h in hpas.values())
    assert objects(docs, "ScaledObject") == {}


@pytest.mark.parametrize("bad", [
    {"workers": {"nlu": {"concurrency": "lots"}}},
    {"workers": {"nlu": {"concurency": 4}}},                  # misspelt key
    {"workers": {"Bad_Name": {}}},                             # not a DNS label
    {"coordinator": {"replicas": 0}},
    {"nats": {"url": "http://nats:4222"}},
    {"nats": {"auth": {"type": "password"}}},
    {"redis": {"url": "localhost:6379"}},
    {"autoscaling": {"keda": {"enabled": "yes"}}},
    {"coordinator": {"image": {"digest": "latest"}}},
    {"unknownTopLevel": 1},
])
def test_bad_values_are_rejected_by_the_schema(bad):
    with pytest.raises(render_helm.RenderError, match="schema"):
        render_helm.render(CHART, bad)


def test_the_committed_bad_values_file_is_rejected():
    bad = yaml.safe_load((ROOT / "helm/baton/ci/bad-values.yaml").read_text())
    with pytest.raises(render_helm.RenderError, match="schema"):
        render_helm.render(CHART, bad)


@pytest.mark.parametrize("bad,message", [
    ({"workers": {"nlu": {"drainTimeoutSecs": 60, "terminationGracePeriodSeconds": 30}}},
     "must be above drainTimeoutSecs"),
    ({"coordinator": {"terminationGracePeriodSeconds": 20}}, "must be above shutdownGraceSecs"),
    ({"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}}, "exclude each other"),
    ({"nats": {"auth": {"type": "token"}}}, "needs natsAuth.existingSecret"),
    ({"redis": {"tls": {"enabled": True, "existingSecret": "x"}}}, "rediss://"),
    ({"redis": {"url": "redis://u:secret@redis:6379"}}, "must not carry a password"),
])
def test_inconsistent_values_fail_at_render(bad, message):
    with pytest.raises(render_helm.RenderError, match=message):
        render_helm.render(CHART, bad)


def test_probes_ports_and_security_on_every_container():
    for values in ({}, PROD):
        docs = render(values)
        port = (values.get("admin") or {}).get("port", 9090)
        for name, d in objects(docs, "Deployment").items():
            pod = d["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["automountServiceAccountToken"] is False
            for c in pod["containers"]:
                ports = {p["name"]: p["containerPort"] for p in c["ports"]}
                assert ports == {"admin": port}
                assert env_of(c)["BATON_ADMIN_ADDR"] == f"0.0.0.0:{port}"
                assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
                assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"] == {"drop": ["ALL"]}
                assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
                assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], name
        services = objects(docs, "Service")
        for name, svc in services.items():
            assert svc["spec"]["ports"] == [{"name": "admin", "port": port, "targetPort": "admin",
                                             "protocol": "TCP"}]


def test_coordinator_replicas_pdb_config_and_redis_secrets():
    docs = render(PROD)
    d = objects(docs, "Deployment")["baton-coordinator"]
    assert d["spec"]["replicas"] == 3
    assert "baton-coordinator" in objects(docs, "PodDisruptionBudget")
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["coordinator"]
    env = env_of(c)
    assert env["BATON_REDIS_URL"] == PROD["redis"]["url"]
    assert env["BATON_REDIS_USER"] == "baton"
    assert mounted_file(pod, c, env["BATON_REDIS_PASSWORD_FILE"]) == ("baton-redis", "password")
    assert mounted_file(pod, c, env["BATON_REDIS_TLS_CERT"]) == ("baton-redis-tls", "tls.crt")
    assert env["BATON_NATS_USER"] == "coordinator"
    assert mounted_file(pod, c, env["BATON_NATS_PASSWORD_FILE"]) == ("baton-nats-users", "coordinator")
    assert env["BATON_NATS_INBOX_PREFIX"] == "_INBOX_coordinator"
    assert int(env["BATON_SHUTDOWN_GRACE_SECS"]) < pod["terminationGracePeriodSeconds"]
    # The options file is the ConfigMap's, with the values' keys.
    cm_name, key = mounted_file(pod, c, env["BATON_CONFIG"])
    config = yaml.safe_load(objects(docs, "ConfigMap")[cm_name]["data"][key])
    assert config["max_in_flight"] == 512
    keys = set(yaml.safe_load((ROOT / "deploy/coordinator.example.yaml").read_text()))
    assert set(config) <= keys, set(config) - keys
    # No secret value anywhere in the manifest: only file paths and Secret names.
    assert not any(e.get("valueFrom", {}).get("secretKeyRef") for e in c["env"]
                   if e["name"].endswith("PASSWORD"))


def test_each_worker_has_its_own_nats_user_in_prod():
    docs = render(PROD)
    for agent in ("nlu", "sql", "rag", "answer", "summarise"):
        pod = objects(docs, "Deployment")[f"baton-agent-{agent}"]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = env_of(c)
        assert env["BATON_NATS_USER"] == f"agent-{agent}"
        assert mounted_file(pod, c, env["BATON_NATS_PASSWORD_FILE"]) == ("baton-nats-users", f"agent-{agent}")
        assert env["BATON_NATS_INBOX_PREFIX"] == f"_INBOX_{agent}"
        assert env["BATON_NATS_TLS_REQUIRED"] == "true"
        assert "@sha256:" in c["image"]
    so = objects(docs, "ScaledObject")
    assert so["baton-agent-summarise"]["spec"]["minReplicaCount"] == 0
    assert so["baton-agent-sql"]["spec"]["maxReplicaCount"] == 40


def test_service_monitor_and_network_policy():
    docs = render(PROD)
    (sm,) = objects(docs, "ServiceMonitor").values()
    labelled = [s for s in objects(docs, "Service").values()
                if s["metadata"]["labels"].get("baton.io/metrics") == "true"]
    assert len(labelled) == 6  # the coordinator and five agent types
    assert sm["spec"]["endpoints"][0]["port"] == "admin"
    policies = objects(docs, "NetworkPolicy")
    worker = policies["baton-worker"]
    ports = [p["port"] for rule in worker["spec"]["egress"] for p in rule.get("ports", [])]
    assert 6379 not in ports  # workers may not reach Redis
    assert 6379 in [p["port"] for rule in policies["baton-coordinator"]["spec"]["egress"]
                    for p in rule.get("ports", [])]


def test_notes_name_every_consumer():
    text = notes(KEDA_VALUES)
    for agent in AGENTS:
        assert f"baton-agent-{agent}" in text
    assert "scaledobjects" in text


def _kustomize(overlay: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy/overlays" / overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_kustomize_overlays():
    dev = _kustomize("dev")
    assert {"nats", "redis"} <= set(objects(dev, "Deployment"))
    assert objects(dev, "ConfigMap")["baton-endpoints"]["data"]["redis-url"] == "redis://redis:6379"
    prod = _kustomize("prod")
    assert "redis-aof" in objects(prod, "StatefulSet")
    args = " ".join(objects(prod, "StatefulSet")["redis-aof"]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--appendonly yes" in args and "noeviction" in args
    assert "--replicas 3" in objects(prod, "Job")["baton-streams-r3"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    for docs in (dev, prod):
        for d in objects(docs, "Deployment").values():
            if d["metadata"]["labels"].get("app.kubernetes.io/part-of") == "baton":
                assert env_of(d["spec"]["template"]["spec"]["containers"][0])["BATON_NATS_URL"] == \
                    {"configMapKeyRef": {"name": "baton-endpoints", "key": "nats-url"}}


# Variables the binaries are gaining in parallel (issue 14 items 1-3): the admin server, the
# coordinator's shutdown grace, and secrets from files. Every other BATON_* variable the
# manifests set must be one a binary declares today (clap `env = "BATON_…"`).
UPCOMING = {"BATON_ADMIN_ADDR", "BATON_SHUTDOWN_GRACE_SECS", "BATON_REDIS_PASSWORD_FILE",
            "BATON_NATS_PASSWORD_FILE", "BATON_NATS_TOKEN_FILE"}


def _declared_env() -> set[str]:
    import re
    names = set()
    for path in (ROOT / "crates").rglob("*.rs"):
        names |= set(re.findall(r'env\s*=\s*"(BATON_[A-Z0-9_]+)"', path.read_text()))
    return names


def test_every_variable_set_is_one_a_binary_reads():
    declared = _declared_env() | UPCOMING
    assert "BATON_NATS_URL" in declared and "BATON_DRAIN_TIMEOUT_SECS" in declared
    docs = [*render({}), *render(PROD), *render(KEDA_VALUES), *_kustomize("dev"), *_kustomize("prod")]
    for d in objects(docs, "Deployment").values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            for name in env_of(c):
                if name.startswith("BATON_"):
                    assert name in declared, f"{d['metadata']['name']}: {name} is read by no binary"
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        for var in (svc.get("environment") or {}):
            if var.startswith("BATON_"):
                assert var in declared, f"compose {name}: {var} is read by no binary"
