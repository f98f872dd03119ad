# One image for the KFP components, the retriever and the RAG endpoint; the command picks the role:
#   coderag serve retriever | coderag serve rag | python -m components... (KFP sets the command).
# The generator is not built here: it runs on KServe's Hugging Face runtime (vLLM backend).
# Dependencies are installed by scripts/install.sh, the same script CI runs, with CPU-only torch and
# every package at the exact version in scripts/constraints.txt.
#
# Build with scripts/build-image.sh (buildah, no Docker engine needed); it passes:
#   BASE_IMAGE        the base both stages start from: the slim Python image below, or, where no registry can
#                     be reached, a Debian bookworm rootfs made by mmdebstrap (python3, python3-venv, git)
#   TORCH_INDEX_URL   where torch comes from; empty: PyPI plus the "wheels" build context
#   --build-context wheels=DIR   extra wheels (the CPU torch wheel) pip may use; bind-mounted, never a layer
#   --secret id=pip-cert,src=FILE  the CA bundle pip needs behind a TLS-inspecting proxy; never a layer
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

# The default "wheels" context: none. `--build-context wheels=DIR` replaces this stage.
FROM scratch AS wheels

FROM ${BASE_IMAGE} AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/constraints.txt scripts/
COPY coderag/ coderag/
COPY serving/ serving/
COPY components/ components/
COPY pipelines/ pipelines/
# Runtime dependencies only (no dev extra), a regular (not editable) install into the venv. The wheels and the
# CA bundle are mounted for this step only, so neither lands in a layer.
RUN --mount=type=bind,from=wheels,target=/wheels \
    --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && PIP="/opt/venv/bin/python -m pip" \
    PIP_FIND_LINKS=/wheels \
    TORCH_INDEX_URL="${TORCH_INDEX_URL}" \
    CODERAG_INSTALL_EXTRAS="" \
    CODERAG_EDITABLE=0 \
    ./scripts/install.sh
# Nothing runs the dependencies' own test suites or compiles C++ against torch in the image: drop their tests
# (torch's C++ test binaries, pandas/scipy/... tests packages) and torch's headers (~200 MB).
RUN site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && rm -rf "$site/torch/test" "$site/torch/include" \
    && find "$site" -depth -type d -name tests -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="coderag" \
      org.opencontainers.image.description="CodeRAG: retrieval-augmented Text-to-SQL (KFP components, retriever, RAG endpoint)" \
      org.opencontainers.image.licenses="Apache-2.0"
# git: the pipeline's promote step commits the release to the GitOps repository. Not version-pinned: a Debian
# point release removes the old version from the archive and breaks the build; the base image pins the distro.
# The mmdebstrap base already has git (no network needed then).
# hadolint ignore=DL3008
RUN if ! command -v git >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends git \
        && rm -rf /var/lib/apt/lists/*; \
    fi
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
