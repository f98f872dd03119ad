#!/usr/bin/env bash
# System packages the test suite needs beyond Python (Debian/Ubuntu): Prometheus server and promtool for
# the alert-rule and scrape tests (the Debian package starts no daemon when installed in a container), git
# for the promotion tests, buildah and mmdebstrap to build and run the image (scripts/build-image.sh,
# tests/test_image.py; uidmap for buildah's user namespaces), docker-registry to push it to a registry on
# loopback (the package starts no daemon in a container). kubectl (>= 1.27, built-in kustomize) is expected
# on PATH.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PROGRAMS=(prometheus promtool git buildah mmdebstrap docker-registry)
missing=()
for program in "${PROGRAMS[@]}"; do command -v "$program" >/dev/null || missing+=("$program"); done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -E"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends prometheus git buildah mmdebstrap uidmap docker-registry >/dev/null
fi
promtool --version | head -n 1
buildah --version
