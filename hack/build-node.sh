#!/usr/bin/env bash
# Build the node half of the test cluster: kubelet, kube-proxy, kube-controller-manager,
# kube-scheduler (Kubernetes, same version as the control plane) and CoreDNS.
#
# Why: like hack/build-control-plane.sh, release binaries cannot be downloaded here, so
# they are compiled from the Go module proxy through the pinned wrapper modules in
# hack/node/ (their go.mod + go.sum make the build reproducible).
#
# Idempotent: binaries are cached under
#   ${BUNTIME_CACHE_DIR:-$HOME/.cache/buntime}/node/<k8s-ver>-<coredns-ver>/
# and linked into <repo>/.tools/bin/. A warm run only checks the cache (seconds). A cold
# build runs under `nice` (the machine is shared); on 2 cores it takes roughly 6-10 minutes
# after hack/build-control-plane.sh has warmed Go's build cache.
#
# Environment:
#   BUNTIME_CACHE_DIR  cache root (default: $HOME/.cache/buntime)
#   GOMODCACHE         Go module cache (default: go env GOMODCACHE)
#   FORCE=1            rebuild even when the cache looks valid
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
modules="$repo/hack/node"
bin_dir="$repo/.tools/bin"
k8s_tools=(kubelet kube-proxy kube-controller-manager kube-scheduler)
all_tools=("${k8s_tools[@]}" coredns)

log() { printf '[build-node] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib/k8s-build.sh
source "$repo/hack/lib/k8s-build.sh"

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go >= 1.26 is needed)"

k8s_ver="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$modules/kubernetes/go.mod")"
coredns_ver="$(awk '$1 == "github.com/coredns/coredns" { print $2; exit }' "$modules/coredns/go.mod")"
[[ -n "$k8s_ver" && -n "$coredns_ver" ]] || die "could not read pinned versions from $modules/*/go.mod"
cp_ver="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$repo/hack/control-plane/kube-apiserver/go.mod")"
[[ "$k8s_ver" == "$cp_ver" ]] || die "hack/node pins Kubernetes $k8s_ver but the control plane pins $cp_ver"

cache_root="${BUNTIME_CACHE_DIR:-$HOME/.cache/buntime}"
cache_dir="$cache_root/node/${k8s_ver}-${coredns_ver}"
stamp_file="$cache_dir/inputs.sha256"

# Bump when the build recipe below changes in a way that should invalidate the cache.
recipe=1

inputs_hash() {
	{
		cat "$modules/kubernetes/go.mod" "$modules/kubernetes/go.sum" \
			"$modules/coredns/go.mod" "$modules/coredns/go.sum"
		echo "recipe=$recipe"
		go env GOVERSION GOOS GOARCH
	} | sha256sum | cut -d' ' -f1
}

cache_valid() {
	[[ "${FORCE:-0}" != 1 && -f "$stamp_file" && "$(cat "$stamp_file")" == "$want_hash" ]] || return 1
	local name
	for name in "${all_tools[@]}"; do [[ -x "$cache_dir/$name" ]] || return 1; done
}

link_into_tools() {
	link_tools "$cache_dir" "$bin_dir" "${all_tools[@]}"
	log "installed into $bin_dir: ${all_tools[*]}"
	log "  $("$bin_dir/kubelet" --version), CoreDNS $("$bin_dir/coredns" -version | awk 'NR == 1 { print $1 }')"
}

k8s_go_env

want_hash="$(inputs_hash)"
if cache_valid; then
	log "cache hit: $cache_dir (Kubernetes $k8s_ver, CoreDNS $coredns_ver); skipping build"
	link_into_tools
	exit 0
fi

mkdir -p "$cache_dir"
if command -v flock >/dev/null 2>&1; then
	exec 9>"$cache_dir/.lock"
	flock 9
	if cache_valid; then
		log "cache filled by a concurrent run: $cache_dir"
		link_into_tools
		exit 0
	fi
fi

log "building ${k8s_tools[*]} $k8s_ver and CoreDNS $coredns_ver into $cache_dir"
ldflags="$(k8s_version_ldflags "$modules/kubernetes" "$k8s_ver")"

for name in "${k8s_tools[@]}"; do
	start=$SECONDS
	log "go build k8s.io/kubernetes/cmd/$name"
	(cd "$modules/kubernetes" &&
		nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$cache_dir/$name.tmp" "k8s.io/kubernetes/cmd/$name")
	log "  $name built in $((SECONDS - start))s"
done
start=$SECONDS
log "go build github.com/coredns/coredns"
(cd "$modules/coredns" &&
	nice -n 19 go build -trimpath -ldflags "-s -w" -o "$cache_dir/coredns.tmp" github.com/coredns/coredns)
log "  coredns built in $((SECONDS - start))s"

for name in "${all_tools[@]}"; do mv -f "$cache_dir/$name.tmp" "$cache_dir/$name"; done
reports "$cache_dir/kubelet" --version "$k8s_ver" || die "built kubelet does not report $k8s_ver"
reports "$cache_dir/coredns" -version "${coredns_ver#v}" || die "built coredns does not report $coredns_ver"
printf '%s\n' "$want_hash" >"$stamp_file"

link_into_tools
