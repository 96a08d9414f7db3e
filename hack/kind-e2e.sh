#!/usr/bin/env bash
# End to end on a real cluster: kind + the image built from this tree + the chart.
#
#   1. kind (sigs.k8s.io/kind v0.33.0, `go install`ed into .tools/bin when missing) and a cluster;
#   2. docker build, kind load;
#   3. helm install with the in-cluster turso-server and the operator, then `helm test`;
#   4. examples/tursonamespace.yaml + examples/app.yaml (a Deployment labelled for injection)
#      in their own namespace; wait until both app pods are Ready;
#   5. a Job that writes a key through one app pod (keyval HTTP API) and reads it back through
#      the other: the two pods share it only through turso-server.
#
# Needs docker (a running engine) and go or kind. Environment:
#   KIND_CLUSTER (buntime-e2e), IMAGE (buntime:e2e), KEEP_CLUSTER=1 keeps the cluster afterwards.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"
export PATH="$BIN:$PATH"
KIND_VERSION="v0.33.0"
CLUSTER="${KIND_CLUSTER:-buntime-e2e}"
IMAGE="${IMAGE:-buntime:e2e}"
RELEASE="buntime"
NAMESPACE="buntime-system"
APP_NAMESPACE="buntime-e2e"
TNS="orders"

log() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { printf '[kind-e2e] error: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is required"
docker info >/dev/null 2>&1 || die "the docker engine is not reachable (docker info failed)"
for tool in helm kubectl; do
    command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-tools.sh"
done
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
        kubectl describe pods -n "$APP_NAMESPACE" >&2 || true
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

log "building $IMAGE"
docker build -t "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "installing the chart"
helm upgrade --install "$RELEASE" "$ROOT/charts/buntime" \
    --namespace "$NAMESPACE" --create-namespace \
    --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
    --set tursoServer.enabled=true \
    --set runtime.replicaCount=2 \
    --wait --timeout 5m
helm test "$RELEASE" --namespace "$NAMESPACE" --logs --timeout 5m

log "creating TursoNamespace $TNS and the example app"
kubectl create namespace "$APP_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n "$APP_NAMESPACE" -f "$ROOT/examples/tursonamespace.yaml"
kubectl wait -n "$APP_NAMESPACE" "tursonamespace/$TNS" --for=condition=Ready --timeout=120s
sed -e "s#image: .*buntime:.*#image: $IMAGE\n          imagePullPolicy: Never#" "$ROOT/examples/app.yaml" \
    | kubectl apply -n "$APP_NAMESPACE" -f -
kubectl rollout status -n "$APP_NAMESPACE" deployment/orders-app --timeout=300s

mapfile -t PODS < <(kubectl get pods -n "$APP_NAMESPACE" -l app.kubernetes.io/name=orders-app \
    -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}')
[[ ${#PODS[@]} -ge 2 ]] || die "expected two app pods, got ${#PODS[@]}"
log "writing through ${PODS[0]}, reading through ${PODS[1]}"

kubectl delete job -n "$APP_NAMESPACE" write-read --ignore-not-found >/dev/null
kubectl apply -n "$APP_NAMESPACE" -f - <<YAML
apiVersion: batch/v1
kind: Job
metadata:
  name: write-read
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 180
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: check
          image: $IMAGE
          imagePullPolicy: Never
          env:
            - {name: WRITER, value: "http://${PODS[0]}:8000"}
            - {name: READER, value: "http://${PODS[1]}:8000"}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: ["ALL"]}
          command:
            - python
            - -c
            - |
              import json, os, sys, time, urllib.error, urllib.request, uuid
              key, value = f"e2e-{uuid.uuid4().hex[:8]}", {"written": time.time()}
              url = lambda base: f"{base}/keyval/api/keys/{key}"
              req = urllib.request.Request(url(os.environ["WRITER"]), data=json.dumps(value).encode(),
                                           method="PUT", headers={"Content-Type": "application/json"})
              with urllib.request.urlopen(req, timeout=10) as resp:
                  print("PUT", resp.status, flush=True)
              deadline = time.monotonic() + 120
              while time.monotonic() < deadline:
                  try:
                      with urllib.request.urlopen(url(os.environ["READER"]), timeout=10) as resp:
                          body = json.loads(resp.read())
                          print("GET", resp.status, body, flush=True)
                          if value in (body, body.get("value")):
                              sys.exit(0)
                  except urllib.error.HTTPError as exc:
                      print("GET", exc.code, flush=True)
                  time.sleep(2)
              sys.exit("FAIL: the key written through one pod never appeared through the other")
YAML
if ! kubectl wait -n "$APP_NAMESPACE" job/write-read --for=condition=Complete --timeout=200s; then
    kubectl logs -n "$APP_NAMESPACE" job/write-read >&2 || true
    die "write/read Job failed"
fi
kubectl logs -n "$APP_NAMESPACE" job/write-read >&2
log "ok: a write through one pod was read through the other"
