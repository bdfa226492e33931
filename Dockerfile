# One image for every role: `streamml api`, `worker`, `produce`, `train`, and (with the server extras)
# the MLflow server. Build: docker build -t streamml . (compose.yaml builds it for you).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The build stage's image is left dangling after a build; the label lets a clean-up find it.
LABEL org.streamml.stage="build"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
# Dependencies first, in their own layer: a code change does not reinstall them. The runtime
# dependencies are read from pyproject.toml and pinned by requirements.lock.
COPY pyproject.toml requirements.lock deploy/requirements-server.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > runtime.txt \
 && pip install -c requirements.lock -r runtime.txt -r requirements-server.txt
COPY README.md ./
COPY src ./src
RUN pip install --no-deps .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="streamml" \
      org.opencontainers.image.description="Real-time ML inference on Redis Streams with models from the MLflow Model Registry" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# LightGBM needs the OpenMP runtime, which slim images leave out. Debian stable's package (its security
# updates) rather than a pinned version.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 streamml \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /var/lib/streamml streamml \
 && install -d -o 10001 -g 10001 /var/lib/streamml/predictions
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STREAMML_STATE_DIR=/var/lib/streamml \
    STREAMML_GATEWAY_HOST=0.0.0.0 \
    STREAMML_WORKER_METRICS_HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/streamml
EXPOSE 8800
# SIGTERM lets a worker finish and acknowledge its batch (STREAMML_WORKER_SHUTDOWN_GRACE_S); run with an
# init (compose sets `init: true`) so the signal reaches it.
STOPSIGNAL SIGTERM
# No HEALTHCHECK here: one image runs several roles, each with its own probe (the gateway's /readyz, a
# worker's /ready on its metrics port, MLflow's /health), set where the role is chosen: compose.yaml's
# services and the Helm chart's probes.
ENTRYPOINT ["streamml"]
CMD ["api"]
