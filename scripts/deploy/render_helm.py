"""Renders the Helm chart offline, the way `helm install` would (values schema included).

There is no `helm` binary here: helm-sdkpy bundles Helm's Go library, whose Install needs a
cluster. This module gives it a fake API server on 127.0.0.1 (version, API discovery, 404 on
GET, POST/PUT/PATCH echoed back) and a kubeconfig pointing at it; the release it returns
holds the rendered manifest. Nothing leaves the machine.

    python render_helm.py CHART [-f values.yaml ...] [--set-json JSON] [-o out.yaml]

Exit 1 with Helm's message when the install fails (schema violation, `fail` in a template).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

NAMESPACE = "baton"
RELEASE = "baton"

# Every kind the chart may create, by group/version: (plural, kind, namespaced).
RESOURCES = {
    "v1": [("configmaps", "ConfigMap", True), ("services", "Service", True),
           ("serviceaccounts", "ServiceAccount", True), ("secrets", "Secret", True),
           ("namespaces", "Namespace", False), ("pods", "Pod", True)],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    "batch/v1": [("jobs", "Job", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "keda.sh/v1alpha1": [("scaledobjects", "ScaledObject", True),
                         ("triggerauthentications", "TriggerAuthentication", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True),
                                 ("podmonitors", "PodMonitor", True)],
}


def _resource_list(gv: str) -> dict:
    return {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
        "resources": [{"name": plural, "singularName": kind.lower(), "namespaced": ns,
                       "kind": kind, "verbs": ["create", "delete", "get", "list", "patch",
                                               "update", "watch"]}
                      for plural, kind, ns in RESOURCES[gv]],
    }


def _group_list() -> dict:
    groups = {}
    for gv in RESOURCES:
        if "/" in gv:
            group, version = gv.split("/")
            groups.setdefault(group, []).append(version)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
         "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
        for g, vs in groups.items()]}


class _FakeApi(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0",
                                    "platform": "linux/amd64"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": []})
        if path == "/apis":
            return self._send(200, _group_list())
        if path == "/api/v1":
            return self._send(200, _resource_list("v1"))
        if path.startswith("/apis/") and path.count("/") == 3:
            gv = path[len("/apis/"):]
            if gv in RESOURCES:
                return self._send(200, _resource_list(gv))
        if path.endswith("/secrets") or path.endswith("/configmaps"):
            return self._send(200, {"kind": "List", "apiVersion": "v1", "items": [],
                                    "metadata": {"resourceVersion": "1"}})
        return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404, "message": "not found"})

    def _echo(self, code: int):
        # Echo the object back in the encoding it came in (client-go sends core kinds as
        # protobuf, others as JSON): the client reads it as the created object.
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        ctype = self.headers.get("Content-Type") or "application/json"
        self.send_response(code)
        self.send_header("Content-Type", ctype.split(";")[0])
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):  # noqa: N802
        self._echo(201)

    def do_PUT(self):  # noqa: N802
        self._echo(200)

    def do_PATCH(self):  # noqa: N802
        self._echo(200)

    def do_DELETE(self):  # noqa: N802
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


@contextlib.contextmanager
def fake_cluster():
    """Yields the path of a kubeconfig for a fake API server on 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = pathlib.Path(tmp, "kubeconfig")
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {
                "server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                       "namespace": NAMESPACE}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
        }))
        old = os.environ.get("HELM_CACHE_HOME")
        os.environ.setdefault("HELM_CACHE_HOME", str(pathlib.Path(tmp, "cache")))
        os.environ.setdefault("HELM_CONFIG_HOME", str(pathlib.Path(tmp, "config")))
        os.environ.setdefault("HELM_DATA_HOME", str(pathlib.Path(tmp, "data")))
        try:
            yield str(kubeconfig)
        finally:
            server.shutdown()
            if old is None:
                os.environ.pop("HELM_CACHE_HOME", None)


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class RenderError(Exception):
    pass


def render(chart: str, values: dict | None = None) -> tuple[str, str]:
    """Returns (manifest, notes) for `values` laid over the chart's defaults."""
    import helm_sdkpy  # imported late: loading its 122 MB library takes a moment

    with fake_cluster() as kubeconfig:
        config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=kubeconfig)
        try:
            release = asyncio.run(helm_sdkpy.Install(config).run(
                RELEASE, str(pathlib.Path(chart).resolve()), values=values or None,
                wait=False, timeout=60))
        except helm_sdkpy.HelmError as error:
            raise RenderError(str(error)) from error
    manifest = release.get("manifest") or ""
    notes = (release.get("info") or {}).get("notes") or ""
    if not manifest.strip():
        raise RenderError(f"empty manifest; release: {json.dumps(release)[:2000]}")
    return manifest, notes


def lint(chart: str) -> list[dict]:
    """`helm lint`'s warnings and errors (severity >= 2); its texts come back empty, so the
    caller can only say which file they are about."""
    import helm_sdkpy

    result = helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(pathlib.Path(chart).resolve()))
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    bad = [m for m in result.get("Messages") or [] if m.get("Severity", 0) >= 2]
    return bad + [{"Severity": 3, "Path": "?", "Err": e} for e in result.get("Errors") or []]


def load_values(files: list[str], set_json: list[str]) -> dict:
    values: dict = {}
    for f in files:
        values = deep_merge(values, yaml.safe_load(pathlib.Path(f).read_text()) or {})
    for j in set_json:
        values = deep_merge(values, json.loads(j))
    return values


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chart")
    ap.add_argument("-f", "--values", action="append", default=[])
    ap.add_argument("--set-json", action="append", default=[])
    ap.add_argument("-o", "--output")
    ap.add_argument("--notes", action="store_true", help="print NOTES.txt instead")
    ap.add_argument("--lint", action="store_true", help="run helm lint instead (pass/fail)")
    args = ap.parse_args()
    if args.lint:
        problems = lint(args.chart)
        for p in problems:
            print(f"helm lint: severity {p['Severity']} in {p['Path']}", file=sys.stderr)
        return 1 if problems else 0
    try:
        manifest, notes = render(args.chart, load_values(args.values, args.set_json))
    except RenderError as error:
        print(f"helm install failed: {error}", file=sys.stderr)
        return 1
    text = notes if args.notes else manifest
    if args.output:
        pathlib.Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
