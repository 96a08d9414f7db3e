# syntax=docker/dockerfile:1.7
# One image for the three workloads; the container command picks what runs:
#   buntime serve       the runtime (default)
#   turso-server        the in-cluster sync server (needs /usr/local/bin/tursodb)
#   buntime-operator    the TursoNamespace operator
# Build: docker build -t buntime:dev .   (multi-arch: docker buildx build --platform linux/amd64,linux/arm64)
# Without Docker or a registry: make image (hack/build-images.sh: buildah on Debian bases).

# Which image each workload uses: all three run this one image. Only turso-server needs tursodb
# (/usr/local/bin/tursodb, its child process); the runtime and the operator never call it.
# The base images are build arguments so that a machine without a registry can pass its own
# (hack/build-images.sh passes Debian bookworm images made with debootstrap).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm
# Set by BuildKit (and buildah) from --platform; picks the tursodb stage below.
ARG TARGETARCH

# -- tursodb for amd64: `npm pack` of the package hack/install-tools.sh installs ---------------------
# Same package, version and both checksums (a chart test compares them): the tarball, then the binary
# inside it. npm runs on the build platform; the binary is only used for linux/amd64 targets.
FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS tursodb-amd64
ARG TURSODB_VERSION=0.7.0
ARG TURSODB_NPM_PKG=@tursodatabase/cli-linux-x64-gnu
ARG TURSODB_TGZ_SHA256=3f305dfaeaaa6c95b78d3be3d99ea575abfbfb997d7f6ccbf4d629d42ebd3e6f
ARG TURSODB_SHA256=2ff2e262a949552bba258a3897d251b3c5c0228fcefb3b5fd3b7584763375535
WORKDIR /tmp
RUN set -eu; \
    npm pack --silent "${TURSODB_NPM_PKG}@${TURSODB_VERSION}" >/dev/null; \
    mv ./*.tgz /tmp/tursodb.tgz; \
    echo "${TURSODB_TGZ_SHA256}  /tmp/tursodb.tgz" | sha256sum -c -; \
    tar -xzf /tmp/tursodb.tgz -C /tmp package/tursodb; \
    echo "${TURSODB_SHA256}  /tmp/package/tursodb" | sha256sum -c -; \
    install -D -m 0755 /tmp/package/tursodb /out/tursodb; \
    rm -rf /tmp/package /tmp/tursodb.tgz

# -- tursodb for arm64: built from source ------------------------------------------------------------
# No registry serves a linux/arm64 tursodb (npm publishes x86_64 only), so the arm64 stage compiles
# the `cli` crate (turso_cli, binary `tursodb`) of tursodatabase/turso at the commit the v0.7.0 tag
# points to. The commit is the pin: the clone is checked against it, and `--locked` builds exactly
# the Cargo.lock of that commit, so no archive checksum is needed. rustup in the Rust image installs
# the toolchain the repository's rust-toolchain.toml names. Built natively on an arm64 builder (or
# under QEMU with `docker buildx build --platform linux/arm64`); a chart test checks that this pin
# and hack/install-tools.sh's version agree.
FROM ${RUST_IMAGE} AS tursodb-arm64
ARG TURSODB_VERSION=0.7.0
ARG TURSODB_GIT_URL=https://github.com/tursodatabase/turso.git
ARG TURSODB_GIT_COMMIT=e7cb62a8bd2f3655a661a621ee389365c1a1e43e
RUN set -eu; \
    git init -q /src/turso; \
    cd /src/turso; \
    git remote add origin "${TURSODB_GIT_URL}"; \
    git fetch -q --depth 1 origin "${TURSODB_GIT_COMMIT}"; \
    git checkout -q FETCH_HEAD; \
    test "$(git rev-parse HEAD)" = "${TURSODB_GIT_COMMIT}" || { \
      echo "checked out $(git rev-parse HEAD), want ${TURSODB_GIT_COMMIT}" >&2; exit 1; }; \
    cargo build --release --locked -p turso_cli --bin tursodb; \
    install -D -m 0755 target/release/tursodb /out/tursodb; \
    /out/tursodb --version | grep -F "${TURSODB_VERSION}"; \
    rm -rf /src/turso "${CARGO_HOME:-/usr/local/cargo}/registry"

# -- tursodb for the target architecture (only turso-server runs it) ---------------------------------
FROM tursodb-${TARGETARCH} AS tursodb

# -- the wheel (hatchling, pinned in pyproject.toml's build-system) ------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime ./runtime
COPY operator ./operator
COPY turso-server ./turso-server
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- the image --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it; the chart uses the same ids.
RUN groupadd --system --gid 10001 buntime \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/buntime --create-home \
      --shell /usr/sbin/nologin buntime \
 && install -d -o 10001 -g 10001 /data/turso /var/lib/turso
COPY --from=tursodb /out/tursodb /usr/local/bin/tursodb
COPY --from=wheel /wheels /tmp/wheels
COPY constraints.txt /tmp/constraints.txt
# Every extra (the image runs the runtime, turso-server and the operator), at the exact versions
# of constraints.txt. Byte-compiled at install time: the root filesystem is read-only in the pods.
RUN set -eu; wheel="$(ls /tmp/wheels/buntime-*.whl)"; \
    pip install --no-cache-dir --compile -c /tmp/constraints.txt "${wheel}[all]" \
 && rm -rf /tmp/wheels /tmp/constraints.txt
USER 10001:10001
WORKDIR /home/buntime
EXPOSE 8000 8080 8081 9443
CMD ["buntime", "serve"]
