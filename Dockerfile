# syntax=docker/dockerfile:1
#
# token-refresher image.
#
#   docker build -t ghcr.io/example/token-refresher:0.1.0 .
#
# Needs BuildKit (the default builder since Docker 23) for RUN --mount.
#
# Stage 1 builds the project's wheel; stage 2 installs only that wheel (and its
# runtime dependencies from the package index) into a virtualenv on the same
# slim base, so the final image carries no source tree, compilers or caches.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="token-refresher" \
      org.opencontainers.image.description="Sidecar that keeps a pod's service-account token valid while the pod drains" \
      org.opencontainers.image.source="https://github.com/example/token-refresher" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The wheel is mounted from the build stage for this one step only, so it never
# becomes a layer of the final image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir /wheels/*.whl

# Numeric user and group (the "nonroot" id of distroless images) so that
# Kubernetes' runAsNonRoot can verify it without an /etc/passwd entry.
USER 65532:65532

ENTRYPOINT ["token-refresher"]
