# Shared by hack/build-control-plane.sh and hack/build-node.sh (sourced, not run): the Go
# environment, Kubernetes' version ldflags, and linking cached binaries into .tools/bin.
# The caller defines log() and die().

# A reproducible, offline-safe Go build: never a go.work from the surrounding tree, the local
# toolchain, go.sum as committed (drift fails loudly), static binaries.
k8s_go_env() {
	export GOWORK=off
	export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
	export GOMODCACHE="${GOMODCACHE:-$(go env GOMODCACHE)}"
	export GOFLAGS="-mod=readonly -buildvcs=false"
	export CGO_ENABLED=0
}

# k8s_version_ldflags MODULE_DIR K8S_VERSION: print the ldflags that fill the version variables
# the way kubernetes' hack/lib/version.sh does (without them a binary reports v0.0.0-master).
# The commit and date come from the module proxy's .info record, so the build stays reproducible.
k8s_version_ldflags() {
	local module_dir=$1 version=$2 info commit date minor pkg flags="-s -w"
	(cd "$module_dir" && go mod download k8s.io/kubernetes) >&2 || return 1
	info="$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/${version}.info"
	commit="$(sed -n 's/.*"Hash":"\([0-9a-f]*\)".*/\1/p' "$info" 2>/dev/null || true)"
	date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" 2>/dev/null || true)"
	minor="${version#v1.}"
	minor="${minor%%.*}"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitTreeState=clean"
		[[ -n "$commit" ]] && flags+=" -X $pkg.gitCommit=$commit"
		[[ -n "$date" ]] && flags+=" -X $pkg.buildDate=$date"
	done
	printf '%s\n' "$flags"
}

# link_tools CACHE_DIR BIN_DIR NAME...: hard links (they survive a wiped cache), else copies
# across filesystems.
link_tools() {
	local cache_dir=$1 bin_dir=$2 name
	shift 2
	mkdir -p "$bin_dir"
	for name in "$@"; do
		rm -f "$bin_dir/$name"
		ln "$cache_dir/$name" "$bin_dir/$name" 2>/dev/null || cp "$cache_dir/$name" "$bin_dir/$name"
	done
}

# reports BINARY FLAG TEXT: whether `BINARY FLAG` runs and prints TEXT. Its output is captured
# first: `binary --version | grep -q` fails under pipefail when grep exits at the first line
# and the binary dies of SIGPIPE writing its second (CoreDNS prints two).
reports() {
	local out
	out="$("$1" "$2" 2>&1)" || return 1
	[[ "$out" == *"$3"* ]]
}
