# One image for the KFP components, the retriever and the RAG endpoint; the command picks the role:
#   coderag serve retriever | coderag serve rag | python -m components... (KFP sets the command).
# The generator is not built here: it runs on KServe's Hugging Face runtime (vLLM backend).
# Dependencies are installed by scripts/install.sh, the same script CI runs, with CPU-only torch and
# every package at the exact version in scripts/constraints.txt.

FROM python:3.11.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/constraints.txt scripts/
COPY coderag/ coderag/
COPY serving/ serving/
COPY components/ components/
COPY pipelines/ pipelines/
# Runtime dependencies only (no dev extra), a regular (not editable) install into the venv.
RUN PIP="/opt/venv/bin/python -m pip" \
    TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu" \
    CODERAG_INSTALL_EXTRAS="" \
    CODERAG_EDITABLE=0 \
    ./scripts/install.sh

FROM python:3.11.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="coderag" \
      org.opencontainers.image.description="CodeRAG: retrieval-augmented Text-to-SQL (KFP components, retriever, RAG endpoint)" \
      org.opencontainers.image.licenses="Apache-2.0"
# git: the pipeline's promote step commits the release to the GitOps repository.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.39.5-0+deb12u3 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 coderag \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/coderag --shell /usr/sbin/nologin coderag
COPY --from=builder /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/home/coderag/.cache/huggingface \
    HF_HUB_OFFLINE=1
WORKDIR /home/coderag
# Numeric user so Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001
EXPOSE 8080
CMD ["coderag", "--help"]
