# syntax=docker/dockerfile:1.7
# One image for the three workloads; the container command picks what runs:
#   buntime serve       the runtime (default)
#   turso-server        the in-cluster sync server (needs /usr/local/bin/tursodb)
#   buntime-operator    the TursoNamespace operator
# Build: docker build -t buntime:dev .   (multi-arch: docker buildx build --platform linux/amd64,linux/arm64)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# -- tursodb for amd64: `npm pack` of the package hack/install-tools.sh installs ---------------------
# Same package, version and both checksums (a chart test compares them): the tarball, then the binary
# inside it. npm runs on the build platform; the binary is only used for linux/amd64 targets.
FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS tursodb-npm
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
    echo "${TURSODB_SHA256}  /tmp/package/tursodb" | sha256sum -c -

# -- tursodb 0.7.0 for the target architecture -------------------------------------------------------
FROM ${PYTHON_IMAGE} AS tursodb
ARG TARGETARCH
ARG TURSODB_VERSION=0.7.0
# arm64: npm has no linux-arm64 build, so the official Linux release archive of the same version.
# Its checksum must be pinned here; the build refuses an unpinned archive instead of trusting
# whatever the URL serves.
ARG TURSODB_ARM64_ASSET=turso_cli-aarch64-unknown-linux-gnu
ARG TURSODB_ARM64_TXZ_SHA256=
COPY --from=tursodb-npm /tmp/package/tursodb /tmp/package/tursodb
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl xz-utils \
 && rm -rf /var/lib/apt/lists/*
RUN set -eu; \
    case "${TARGETARCH:-amd64}" in \
      amd64) \
        install -m 0755 /tmp/package/tursodb /usr/local/bin/tursodb ;; \
      arm64) \
        test -n "${TURSODB_ARM64_TXZ_SHA256}" || { \
          echo "TURSODB_ARM64_TXZ_SHA256 is not pinned: set it to the sha256 of ${TURSODB_ARM64_ASSET}.tar.xz (v${TURSODB_VERSION})" >&2; exit 1; }; \
        url="https://github.com/tursodatabase/turso/releases/download/v${TURSODB_VERSION}/${TURSODB_ARM64_ASSET}.tar.xz"; \
        curl -fsSL --retry 3 -o /tmp/tursodb.tar.xz "$url"; \
        echo "${TURSODB_ARM64_TXZ_SHA256}  /tmp/tursodb.tar.xz" | sha256sum -c -; \
        tar -xJf /tmp/tursodb.tar.xz -C /tmp "${TURSODB_ARM64_ASSET}/tursodb"; \
        install -m 0755 "/tmp/${TURSODB_ARM64_ASSET}/tursodb" /usr/local/bin/tursodb ;; \
      *) echo "no tursodb build for linux/${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    rm -rf /tmp/package; \
    /usr/local/bin/tursodb --version

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
COPY --from=tursodb /usr/local/bin/tursodb /usr/local/bin/tursodb
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
