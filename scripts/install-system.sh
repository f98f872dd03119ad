#!/usr/bin/env bash
# System packages the tests use: Debian's prometheus (server + promtool) and kubectl's kustomize.
# Starts no daemon; tests start their own Prometheus on 127.0.0.1.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
