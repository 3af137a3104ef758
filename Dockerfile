# syntax=docker/dockerfile:1
# The llm-assets code-location image: the Dagster user deployment, its run pods and step pods.
#
#   docker build -t registry.example.com/llm-assets:0.1.0 .                                # CPU torch, no vLLM
#   docker build --build-arg VARIANT=gpu -t registry.example.com/llm-assets-gpu:0.1.0 .     # + the `gpu` extra
#
# The GPU variant runs the enrichment step with LLM_BACKEND=offline (in-process vLLM) on a GPU node
# (llm_assets/execution.py points that step at LLM_ASSETS_GPU_IMAGE). The vLLM server itself uses
# the upstream vllm/vllm-openai image (deploy/k8s/vllm.yaml).
FROM python:3.11-slim-bookworm

ARG VARIANT=cpu
# CPU wheels of torch: PyPI's Linux wheel of the same version is the CUDA build (several GB).
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    LLM_ASSETS_HOME=/tmp/llm_assets \
    LLM_ASSETS_ENV=prod

WORKDIR /opt/llm-assets

# Dependencies first (their layer survives code changes); pins come from pyproject.toml.
COPY pyproject.toml README.md ./
COPY deploy/docker/requirements.py deploy/docker/requirements.py
RUN set -eux; \
    case "$VARIANT" in \
      cpu) pip install --index-url "$TORCH_CPU_INDEX" "$(python deploy/docker/requirements.py torch)" ;; \
      gpu) ;; \
      *) echo "VARIANT must be cpu or gpu" >&2; exit 1 ;; \
    esac; \
    python deploy/docker/requirements.py "$VARIANT" > /tmp/requirements.txt; \
    pip install -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt

COPY llm_assets ./llm_assets
COPY dbt_project ./dbt_project
# Editable: files beside the package (dbt_project/) stay where the code looks for them.
RUN pip install --no-deps -e . \
    && useradd --uid 1000 --create-home dagster \
    && mkdir -p "$DAGSTER_HOME" && chown dagster "$DAGSTER_HOME"

USER 1000
EXPOSE 3030
# The chart passes `dagster api grpc --module-name llm_assets.definitions ...` itself.
CMD ["dagster", "api", "grpc", "--module-name", "llm_assets.definitions", "--host", "0.0.0.0", "--port", "3030"]
