#!/usr/bin/env bash
# Install what the node harness needs from Debian packages (the only OS packages this machine
# can reach): a container runtime, the CNI plugins, iptables for kube-proxy and the harness's
# fence, and the tools that build the images without a Docker engine.
#
#   containerd                    CRI runtime kubelet talks to (Debian 12: 1.6.x)
#   runc                          OCI runtime under containerd
#   containernetworking-plugins   bridge + host-local + loopback CNI plugins (/usr/lib/cni)
#   iptables, conntrack           kube-proxy's iptables mode; the harness's DROP fence
#   buildah                       builds the project's Dockerfile (no daemon)
#   debootstrap                   Debian base images (no registry is reachable)
#
# Idempotent: installs only what is missing (a warm run is a few dpkg queries). Needs root and
# apt; anywhere else it says what is missing and exits 0, so the cluster tests skip with that
# reason instead of failing the build. Nothing here starts a daemon: the harness runs containerd
# itself, with its own state directories, only while a test session needs it.
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables conntrack buildah debootstrap)

log() { printf '[install-node-deps] %s\n' "$*" >&2; }

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    log "all present: ${packages[*]}"
    exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    log "cannot install ${missing[*]} (needs root and apt-get); the node tests will skip"
    exit 0
fi
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The Debian packages would start containerd as a service on a systemd host; policy-rc.d
# (exit 101) stops that for the duration of the install. The harness runs its own instance.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
trap '[[ $created_policy == 1 ]] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "installed: $(dpkg-query -W -f='${Package} ${Version}, ' "${missing[@]}")"
