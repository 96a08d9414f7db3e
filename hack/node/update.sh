#!/usr/bin/env bash
# Re-pin the node wrapper modules: hack/node/kubernetes follows the control plane's Kubernetes
# version (same replace block, regenerated from hack/control-plane/kube-apiserver/go.mod, so run
# hack/control-plane/update.sh first), hack/node/coredns takes the CoreDNS version given.
#
# Usage: hack/node/update.sh v1.12.1
#   then: bash hack/build-node.sh, run the node tests, commit both go.mod/go.sum pairs.
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 <CoreDNS version, e.g. v1.12.1>" >&2; exit 2; }
coredns_ver="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cp_mod="$here/../control-plane/kube-apiserver"
export GOWORK=off GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS=-mod=mod

{
	cat <<'HEADER'
// Wrapper module that builds the node and controller binaries (kubelet, kube-proxy,
// kube-controller-manager, kube-scheduler) from the published k8s.io/kubernetes module,
// pinned exactly like hack/control-plane/kube-apiserver (same replace block).
// Regenerate with hack/node/update.sh; build with hack/build-node.sh.
module buntime/hack/node/kubernetes
HEADER
	sed -n '/^go /,$p' "$cp_mod/go.mod" | sed -e 's#^tool k8s.io/kubernetes/cmd/kube-apiserver$#tool (\n\tk8s.io/kubernetes/cmd/kube-controller-manager\n\tk8s.io/kubernetes/cmd/kube-proxy\n\tk8s.io/kubernetes/cmd/kube-scheduler\n\tk8s.io/kubernetes/cmd/kubelet\n)#'
} >"$here/kubernetes/go.mod"
cp "$cp_mod/go.sum" "$here/kubernetes/go.sum"
(cd "$here/kubernetes" && go mod tidy)

sed -i "s#^require github.com/coredns/coredns .*#require github.com/coredns/coredns $coredns_ver#" "$here/coredns/go.mod"
sed -i "s#^\tgithub.com/coredns/coredns v[^ ]*#\tgithub.com/coredns/coredns $coredns_ver#" "$here/coredns/go.mod"
(cd "$here/coredns" && go mod tidy)
echo "pinned $(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/kubernetes/go.mod") and CoreDNS $coredns_ver" >&2
