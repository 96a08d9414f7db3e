#!/usr/bin/env bash
# End to end on a real cluster: kind + the image built from this tree + the chart, with the same
# checks the node harness runs in `make test` (tests/cluster/node/test_chart_pods.py):
#
#   1. kind (sigs.k8s.io/kind v0.33.0, `go install`ed into .tools/bin when missing) and a cluster;
#   2. the image: the one `make image` built (buildah, .tools/images.env) when there is one, else
#      `docker build` of the same Dockerfile; `kind load`;
#   3. pytest tests/cluster/node/test_chart_pods.py against the kind cluster: helm install with
#      turso-server and two runtime replicas + `helm test`; the example TursoNamespace and app,
#      injected by the webhook; a write through one pod read through the other; turso-server and
#      runtime pod deletes; a rolling `helm upgrade` under load with zero failed requests;
#      `helm uninstall` keeping the CRD, the volume and its keys.
#
# Needs docker (a running engine), go or kind, and `make venv tools`. Environment:
#   KIND_CLUSTER (buntime-e2e), IMAGE (buntime:e2e; ignored when .tools/images.env names one),
#   KEEP_CLUSTER=1 keeps the cluster afterwards.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"
export PATH="$BIN:$PATH"
KIND_VERSION="v0.33.0"
CLUSTER="${KIND_CLUSTER:-buntime-e2e}"
IMAGE="${IMAGE:-buntime:e2e}"
NAMESPACE="buntime-system"

log() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { printf '[kind-e2e] error: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is required"
docker info >/dev/null 2>&1 || die "the docker engine is not reachable (docker info failed)"
for tool in helm kubectl; do
    command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-tools.sh"
done
[[ -x "$ROOT/.venv/bin/python" ]] || die "the venv is missing: run make venv"
if ! command -v kind >/dev/null; then
    command -v go >/dev/null || die "kind is missing and go is not installed to build it"
    log "installing kind $KIND_VERSION into $BIN"
    mkdir -p "$BIN"
    GOBIN="$BIN" go install "sigs.k8s.io/kind@$KIND_VERSION"
fi

cleanup() {
    local code=$?
    if [[ $code -ne 0 ]]; then
        log "failed; state for debugging:"
        kubectl get pods -A -o wide >&2 || true
        kubectl logs -n "$NAMESPACE" -l app.kubernetes.io/component=operator --tail=80 >&2 || true
    fi
    if [[ "${KEEP_CLUSTER:-0}" != "1" ]]; then
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    fi
    exit "$code"
}
trap cleanup EXIT

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "creating kind cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" --wait 180s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

if [[ -f "$ROOT/.tools/images.env" ]]; then
    # shellcheck disable=SC1091 # written by hack/build-images.sh
    source "$ROOT/.tools/images.env"
    log "loading $IMAGE (built by make image) from $IMAGE_ARCHIVE"
    kind load image-archive "$IMAGE_ARCHIVE" --name "$CLUSTER"
else
    log "building $IMAGE with docker"
    docker build -t "$IMAGE" "$ROOT"
    kind load docker-image "$IMAGE" --name "$CLUSTER"
fi

log "running the node harness's chart checks against kind-$CLUSTER"
kubeconfig="$(mktemp)"
kind get kubeconfig --name "$CLUSTER" >"$kubeconfig"
BUNTIME_E2E_KUBECONFIG="$kubeconfig" BUNTIME_E2E_IMAGE="$IMAGE" \
    "$ROOT/.venv/bin/python" -m pytest -p no:cacheprovider -x -v "$ROOT/tests/cluster/node/test_chart_pods.py"
rm -f "$kubeconfig"
log "ok: a write through one pod was read through the other"
