#!/usr/bin/env bash
# Re-pin the control-plane wrapper modules to new upstream versions.
#
# Why: k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces every
# staging repo with a ./staging path), so kube-apiserver/go.mod must pin each
# staging module to the published v0.<minor>.<patch> tag by hand. This script
# regenerates both go.mod files from the upstream module itself and refreshes
# go.sum, so the pins never drift from the replace block upstream ships.
#
# Usage: hack/control-plane/update.sh v1.34.12 v3.6.16
#   then: bash hack/build-control-plane.sh, run the cluster tests, commit go.mod/go.sum.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 <k8s version, e.g. v1.34.12> <etcd version, e.g. v3.6.16>" >&2; exit 2; }
k8s_ver="$1"
etcd_ver="$2"
staging_ver="v0.${k8s_ver#v1.}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOWORK=off GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS=-mod=mod

k8s_dir="$(go mod download -json "k8s.io/kubernetes@$k8s_ver" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[[ -f "$k8s_dir/go.mod" ]] || { echo "could not download k8s.io/kubernetes@$k8s_ver" >&2; exit 1; }
upstream_go="$(awk '$1 == "go" { print $2; exit }' "$k8s_dir/go.mod")"
upstream_godebug="$(awk '$1 == "godebug" { print; exit }' "$k8s_dir/go.mod")"

{
	cat <<EOF
// Wrapper module that builds kube-apiserver from the published k8s.io/kubernetes
// module. k8s.io/kubernetes requires its staging repos at v0.0.0 and replaces
// them with ./staging paths, which do not apply to dependents, so every
// staging module is pinned here to the matching published v0.x tag.
// Regenerate with hack/control-plane/update.sh; build with hack/build-control-plane.sh.
module buntime/hack/control-plane/kube-apiserver

go $upstream_go

EOF
	if [[ -n "$upstream_godebug" ]]; then
		echo "// Same as k8s.io/kubernetes' own go.mod (the main module's godebug wins)."
		echo "$upstream_godebug"
		echo
	fi
	echo "tool k8s.io/kubernetes/cmd/kube-apiserver"
	echo
	echo "require k8s.io/kubernetes $k8s_ver"
	echo
	echo "replace ("
	sed -n '/^replace (/,/^)/p' "$k8s_dir/go.mod" | awk -v v="$staging_ver" '$2 == "=>" { print "\t" $1 " => " $1 " " v }'
	echo ")"
} >"$here/kube-apiserver/go.mod"
rm -f "$here/kube-apiserver/go.sum"
(cd "$here/kube-apiserver" && go mod tidy)

etcd_dir="$(go mod download -json "go.etcd.io/etcd/server/v3@$etcd_ver" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[[ -f "$etcd_dir/go.mod" ]] || { echo "could not download go.etcd.io/etcd/server/v3@$etcd_ver" >&2; exit 1; }
etcd_go="$(awk '$1 == "go" { print $2; exit }' "$etcd_dir/go.mod")"

# The go line must be there before tidy: without it the main module counts as
# pre-1.17 (no graph pruning) and tidy picks newer deps than etcd itself pins.
cat >"$here/etcd/go.mod" <<EOF
// Wrapper module that builds the etcd server binary (package main at the root
// of go.etcd.io/etcd/server/v3) from the Go module proxy. Its sibling etcd
// modules are ordinary published versions, so no replace lines are needed.
// Regenerate with hack/control-plane/update.sh; build with hack/build-control-plane.sh.
module buntime/hack/control-plane/etcd

go $etcd_go

tool go.etcd.io/etcd/server/v3

require go.etcd.io/etcd/server/v3 $etcd_ver
EOF
rm -f "$here/etcd/go.sum"
(cd "$here/etcd" && go mod tidy)

echo "pinned kube-apiserver $k8s_ver (staging $staging_ver) and etcd $etcd_ver"
