#!/usr/bin/env bash
# Build the real kube-apiserver and etcd that the cluster tests run against.
#
# Why: tests need a genuine Kubernetes API server (the envtest approach), and
# this workplace can reach only package registries, so prebuilt release
# binaries cannot be downloaded. Instead both binaries are compiled from the Go
# module proxy through the pinned wrapper modules in hack/control-plane/
# (their go.mod + go.sum make the build reproducible).
#
# Idempotent: binaries are cached under
#   ${BUNTIME_CACHE_DIR:-$HOME/.cache/buntime}/control-plane/<k8s-ver>-<etcd-ver>/
# and linked into <repo>/.tools/bin/. A warm run only checks the cache, prints
# the versions and refreshes the links (a few seconds). A cold build on 2 cores
# takes about 6 minutes (plus module downloads), most of it kube-apiserver.
#
# Environment:
#   BUNTIME_CACHE_DIR  cache root (default: $HOME/.cache/buntime)
#   GOMODCACHE         Go module cache (default: go env GOMODCACHE)
#   FORCE=1            rebuild even when the cache looks valid
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
modules="$repo/hack/control-plane"
bin_dir="$repo/.tools/bin"

log() { printf '[build-control-plane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib/k8s-build.sh
source "$repo/hack/lib/k8s-build.sh"

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go >= 1.26 is needed)"

# Versions come straight from the wrapper go.mod files (no network needed).
k8s_ver="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$modules/kube-apiserver/go.mod")"
etcd_ver="$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$modules/etcd/go.mod")"
[[ -n "$k8s_ver" && -n "$etcd_ver" ]] || die "could not read pinned versions from $modules/*/go.mod"

cache_root="${BUNTIME_CACHE_DIR:-$HOME/.cache/buntime}"
cache_dir="$cache_root/control-plane/${k8s_ver}-${etcd_ver}"
stamp_file="$cache_dir/inputs.sha256"

# Bump when the build recipe below (flags, ldflags) changes in a way that
# should invalidate cached binaries.
recipe=1

# The stamp covers what affects the output besides the versions in the
# directory name: the module graphs, the recipe and the Go toolchain.
inputs_hash() {
	{
		cat "$modules/kube-apiserver/go.mod" "$modules/kube-apiserver/go.sum" \
			"$modules/etcd/go.mod" "$modules/etcd/go.sum"
		echo "recipe=$recipe"
		go env GOVERSION GOOS GOARCH
	} | sha256sum | cut -d' ' -f1
}

cache_valid() {
	[[ "${FORCE:-0}" != 1 && -x "$cache_dir/kube-apiserver" && -x "$cache_dir/etcd" &&
		-f "$stamp_file" && "$(cat "$stamp_file")" == "$want_hash" ]]
}

link_into_tools() {
	link_tools "$cache_dir" "$bin_dir" kube-apiserver etcd
	log "installed into $bin_dir:"
	log "  $("$bin_dir/kube-apiserver" --version)"
	log "  etcd $("$bin_dir/etcd" --version | awk '/^etcd Version:/ { print $3 }')"
}

k8s_go_env

want_hash="$(inputs_hash)"
if cache_valid; then
	log "cache hit: $cache_dir (kube-apiserver $k8s_ver, etcd $etcd_ver); skipping build"
	link_into_tools
	exit 0
fi

mkdir -p "$cache_dir"
# Serialise concurrent runs (e.g. two clones on one machine) on the same cache
# dir; whoever waited re-checks, since the other run may have built it.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$cache_dir/.lock"
	flock 9
	if cache_valid; then
		log "cache filled by a concurrent run: $cache_dir"
		link_into_tools
		exit 0
	fi
fi

log "building kube-apiserver $k8s_ver and etcd $etcd_ver"
log "  go: $(go env GOVERSION), GOMODCACHE=$GOMODCACHE, GOCACHE=$(go env GOCACHE)"
log "  output: $cache_dir"

ldflags="$(k8s_version_ldflags "$modules/kube-apiserver" "$k8s_ver")"

start=$SECONDS
log "go build k8s.io/kubernetes/cmd/kube-apiserver (slow when cold: ~6 min on 2 cores)"
(cd "$modules/kube-apiserver" &&
	go build -trimpath -ldflags "$ldflags" -o "$cache_dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
log "  kube-apiserver built in $((SECONDS - start))s"

start=$SECONDS
log "go build go.etcd.io/etcd/server/v3"
(cd "$modules/etcd" &&
	go build -trimpath -ldflags "-s -w" -o "$cache_dir/etcd.tmp" go.etcd.io/etcd/server/v3)
log "  etcd built in $((SECONDS - start))s"

mv -f "$cache_dir/kube-apiserver.tmp" "$cache_dir/kube-apiserver"
mv -f "$cache_dir/etcd.tmp" "$cache_dir/etcd"

reports "$cache_dir/kube-apiserver" --version "$k8s_ver" || die "built kube-apiserver does not report $k8s_ver"
reports "$cache_dir/etcd" --version "${etcd_ver#v}" || die "built etcd does not report ${etcd_ver#v}"
printf '%s\n' "$want_hash" >"$stamp_file"

link_into_tools
