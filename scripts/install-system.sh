#!/usr/bin/env bash
# System packages the test suite needs beyond Python (Debian/Ubuntu): Prometheus server and promtool for
# the alert-rule and scrape tests (the Debian package starts no daemon when installed in a container), git
# for the promotion tests. kubectl (>= 1.27, built-in kustomize) is expected on PATH.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v git >/dev/null; then
  promtool --version | head -n 1
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -E"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus git >/dev/null
promtool --version | head -n 1
