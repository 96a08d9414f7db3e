#!/usr/bin/env bash
# Build the images the node harness runs, without a registry and without a Docker engine:
#
#   pause    the pod sandbox image: hack/node/pause (static Go binary) in an image from scratch
#   python   Debian bookworm (debootstrap, minbase) + python3.11 + pip  -> the Dockerfile's PYTHON_IMAGE
#   node     Debian bookworm (debootstrap, minbase) + nodejs + npm      -> the Dockerfile's NODE_IMAGE
#   buntime  the project's Dockerfile, built by buildah on those two bases
#
# Each step is cached by a content hash of its inputs (the pause sources; the debootstrap recipe;
# the Dockerfile, the build context and the base images' ids), which also becomes the image's
# pinned tag, so a warm run only checks stamps (seconds) and a changed source rebuilds only the
# project image. Everything lives under ${BUNTIME_CACHE_DIR:-$HOME/.cache/buntime}/images/:
# buildah's storage (vfs driver: plain directories, no overlay mounts to leak) and the
# docker-archive tarballs the harness imports into its containerd. The result is written to
# <repo>/.tools/images.env (PAUSE_IMAGE, PAUSE_ARCHIVE, IMAGE, IMAGE_ARCHIVE) for the harness.
#
# The debootstrap bases follow the Debian archive at the time they are built (bookworm is a
# stable release, so only security and point-release updates move them); FORCE=1 rebuilds all.
# Needs root, buildah, debootstrap and go (hack/install-node-deps.sh installs the first two).
#
# Runs in a private mount namespace (re-executes itself under `unshare -m`): debootstrap mounts
# /proc and /sys in its target and buildah mounts inside its RUN steps, and whatever a crash
# would leave mounted disappears with the namespace.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Where images cannot be built (not root, tools missing) say why and leave no images.env: the
# node tests then skip with that reason instead of failing `make test`.
unable() {
	log "cannot build images here: $*; the node tests will skip"
	rm -f "$repo/.tools/images.env"
	exit 0
}
[[ "$(id -u)" == 0 ]] || unable "needs root (debootstrap, buildah)"
for tool in buildah debootstrap go unshare; do
	command -v "$tool" >/dev/null || unable "$tool is missing (run hack/install-node-deps.sh)"
done
if [[ -z "${_BUNTIME_IMAGES_NS:-}" ]]; then
	_BUNTIME_IMAGES_NS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi

cache="${BUNTIME_CACHE_DIR:-$HOME/.cache/buntime}/images"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # one build at a time per cache (two clones on one machine)

suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
python_pkgs=python3.11,python3-pip,python-is-python3,ca-certificates
node_pkgs=nodejs,npm
app_version="$(awk -F'"' '/^appVersion:/ { print $2 }' "$repo/charts/buntime/Chart.yaml")"
# Bump when a recipe below changes in a way the hashed inputs do not show.
recipe=1

bah() { buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver vfs "$@"; }
has_image() { bah inspect --type image "$1" >/dev/null 2>&1; }
sha() { sha256sum | cut -c1-16; }
stamp_ok() { [[ "${FORCE:-0}" != 1 && -f "$1" ]] && has_image "$(cat "$1")"; }

# -- pause ------------------------------------------------------------------------------------
pause_hash="$(cat "$repo/hack/node/pause/go.mod" "$repo/hack/node/pause/main.go" <(go env GOVERSION) <(echo "$recipe") | sha)"
pause_image="localhost/buntime/pause:$pause_hash"
pause_archive="$cache/pause-$pause_hash.tar"
if [[ "${FORCE:-0}" == 1 || ! -f "$pause_archive" ]] || ! has_image "$pause_image"; then
	start=$SECONDS
	work="$(mktemp -d)"
	(cd "$repo/hack/node/pause" && GOWORK=off CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
		go build -trimpath -ldflags '-s -w' -o "$work/pause" .)
	ctr="$(bah from scratch)"
	bah copy "$ctr" "$work/pause" /pause >/dev/null
	bah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
	bah commit --quiet --rm "$ctr" "$pause_image" >/dev/null
	rm -f "$pause_archive"
	bah push --quiet "$pause_image" "docker-archive:$pause_archive.tmp:$pause_image"
	mv "$pause_archive.tmp" "$pause_archive"
	rm -rf "$work"
	log "pause image $pause_image built in $((SECONDS - start))s"
else
	log "cache hit: $pause_image"
fi

# -- Debian bases -------------------------------------------------------------------------------
# debian_base NAME INCLUDE APT_PACKAGES CMD [ENV...] -> prints the image name
# INCLUDE goes to debootstrap; APT_PACKAGES are installed after it with apt-get in a chroot
# (debootstrap's own resolver cannot pick between alternatives, which npm's dependencies need).
debian_base() {
	local name="$1" pkgs="$2" apt_pkgs="$3" cmd="$4"
	shift 4
	local hash image stamp
	hash="$(printf '%s\n' "$suite" "$mirror" "$pkgs" ${apt_pkgs:+"apt:$apt_pkgs"} "$cmd" "$@" "$recipe" | sha)"
	image="localhost/buntime/debian-$name:$suite-$hash"
	stamp="$cache/base-$name.stamp"
	if [[ "${FORCE:-0}" != 1 ]] && has_image "$image"; then
		log "cache hit: $image"
		printf '%s\n' "$image"
		return
	fi
	local start=$SECONDS rootfs
	rootfs="$(mktemp -d "$cache/rootfs-$name.XXXXXX")"
	# shellcheck disable=SC2064 # expand now: the trap must remove this rootfs
	trap "rm -rf '$rootfs'" EXIT
	log "debootstrap $suite ($pkgs) for $image; takes a few minutes"
	mkdir -p "$cache/debs"
	nice -n 19 debootstrap --variant=minbase --include="$pkgs" --cache-dir="$cache/debs" \
		"$suite" "$rootfs" "$mirror" >"$cache/debootstrap-$name.log" 2>&1 ||
		die "debootstrap failed; see $cache/debootstrap-$name.log"
	if [[ -n "$apt_pkgs" ]]; then
		log "apt-get install $apt_pkgs (chroot)"
		# This script runs in its own mount namespace: these mounts end with it.
		mount -t proc proc "$rootfs/proc"
		cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
		printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
		chmod +x "$rootfs/usr/sbin/policy-rc.d"
		# shellcheck disable=SC2086 # a space-separated package list
		nice -n 19 chroot "$rootfs" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends ${apt_pkgs//,/ }" \
			>>"$cache/debootstrap-$name.log" 2>&1 || die "apt-get install failed; see $cache/debootstrap-$name.log"
		umount "$rootfs/proc"
		rm -f "$rootfs/usr/sbin/policy-rc.d"
		: >"$rootfs/etc/resolv.conf"
	fi
	cat >"$rootfs/etc/apt/sources.list" <<-SOURCES
		deb $mirror $suite main
		deb $mirror $suite-updates main
		deb http://deb.debian.org/debian-security $suite-security main
	SOURCES
	# Debian marks its Python as externally managed (PEP 668); an image's Python is the
	# image's own, as in python:3.11-slim, so pip may install into it.
	rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
	rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
	local ctr mnt env_args=()
	ctr="$(bah from scratch)"
	mnt="$(bah mount "$ctr")"
	tar -C "$rootfs" -cf - . | tar -C "$mnt" -xpf -
	bah umount "$ctr" >/dev/null
	local kv
	for kv in "$@"; do env_args+=(--env "$kv"); done
	bah config --cmd "$cmd" --env LANG=C.UTF-8 "${env_args[@]}" "$ctr"
	bah commit --quiet --rm "$ctr" "$image" >/dev/null
	rm -rf "$rootfs"
	trap - EXIT
	printf '%s\n' "$image" >"$stamp"
	log "$image built in $((SECONDS - start))s"
	printf '%s\n' "$image"
}

python_image="$(debian_base python "$python_pkgs" "" python3)"
# npm brings its own CA list; the build machine may sit behind a TLS proxy whose CA is only in
# the system bundle (mounted into RUN steps below), so node reads that bundle as well.
node_image="$(debian_base node ca-certificates "$node_pkgs" node NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt)"

# -- the project image --------------------------------------------------------------------------
context_hash() {
	cd "$repo"
	{
		printf '%s\n' "$recipe" "$python_image" "$node_image" \
			"$(bah inspect --type image --format '{{.FromImageID}}' "$python_image")" \
			"$(bah inspect --type image --format '{{.FromImageID}}' "$node_image")"
		find Dockerfile .dockerignore pyproject.toml README.md runtime operator turso-server -type f \
			! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' ! -name '*.db' ! -name '*.db-wal' ! -name '*.db-shm' -print0 |
			sort -z | xargs -0 sha256sum
	} | sha
}
image_hash="$(context_hash)"
image="localhost/buntime:$app_version-$image_hash"
image_archive="$cache/buntime-$image_hash.tar"
if [[ "${FORCE:-0}" == 1 || ! -f "$image_archive" ]] || ! has_image "$image"; then
	start=$SECONDS
	log "buildah bud $image (PYTHON_IMAGE=$python_image NODE_IMAGE=$node_image)"
	# buildah 1.28 (Debian 12) looks a FROM up as a stage name before expanding its ARGs, so
	# `FROM tursodb-${TARGETARCH}` would be pulled as an image; BuildKit and newer buildah
	# resolve it. Give buildah the same Dockerfile with the architecture spelled out.
	arch="$(go env GOARCH)"
	sed "s/^FROM tursodb-\${TARGETARCH} AS tursodb\$/FROM tursodb-$arch AS tursodb/" "$repo/Dockerfile" \
		>"$cache/Dockerfile.buildah"
	grep -q "^FROM tursodb-$arch AS tursodb\$" "$cache/Dockerfile.buildah" ||
		die "the Dockerfile no longer has 'FROM tursodb-\${TARGETARCH} AS tursodb'"
	# The host's CA bundle is mounted into every RUN step (pip, npm reach their registries
	# through the machine's TLS proxy); it is not copied into the image.
	nice -n 19 buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver vfs \
		bud --isolation chroot --network host --layers \
		--volume /etc/ssl/certs:/etc/ssl/certs:ro \
		--build-arg "PYTHON_IMAGE=$python_image" --build-arg "NODE_IMAGE=$node_image" \
		--build-arg "TARGETARCH=$arch" --file "$cache/Dockerfile.buildah" \
		--tag "$image" "$repo" >"$cache/buildah-bud.log" 2>&1 ||
		{ tail -n 40 "$cache/buildah-bud.log" >&2; die "buildah bud failed; see $cache/buildah-bud.log"; }
	rm -f "$image_archive"
	bah push --quiet "$image" "docker-archive:$image_archive.tmp:$image"
	mv "$image_archive.tmp" "$image_archive"
	log "$image built in $((SECONDS - start))s"
	# Only the current project image is kept (each is ~450 MB); the bases and the layer cache stay.
	for old in "$cache"/buntime-*.tar; do
		[[ "$old" == "$image_archive" ]] || rm -f "$old"
	done
	# awk, not grep: a grep that matches nothing (the first build on a machine) fails the pipe.
	bah images --format '{{.Name}}:{{.Tag}}' | awk -v keep="$image" '/^localhost\/buntime:/ && $0 != keep' |
		while read -r old; do bah rmi "$old" >/dev/null 2>&1 || true; done
else
	log "cache hit: $image"
fi

mkdir -p "$repo/.tools"
cat >"$repo/.tools/images.env" <<ENV
PAUSE_IMAGE=$pause_image
PAUSE_ARCHIVE=$pause_archive
IMAGE=$image
IMAGE_ARCHIVE=$image_archive
PYTHON_IMAGE=$python_image
NODE_IMAGE=$node_image
ENV
log "wrote $repo/.tools/images.env (image $image)"
