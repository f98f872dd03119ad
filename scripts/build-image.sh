#!/usr/bin/env bash
# Builds the CodeRAG image from the Dockerfile with buildah (no Docker engine needed), tags it, and prints
# its name, digest and size. Also writes them to build/image.json (what the image tests and
# `coderag release image --build-record` read).
#
#   bash scripts/build-image.sh            build (or reuse the image already built from these very inputs)
#   CODERAG_IMAGE_REBUILD=1 bash scripts/build-image.sh   build even when an image of these inputs exists
#
# Settings (environment):
#   CODERAG_IMAGE          name:tag to give the image (default localhost/coderag:<project version>)
#   CODERAG_BASE_IMAGE     base image for both stages; default: the Dockerfile's slim Python image when it can be
#                          pulled, else a Debian bookworm rootfs made with mmdebstrap (cached, see below)
#   CODERAG_IMAGE_CACHE    where the mmdebstrap base tarball and the torch wheel are kept between runs
#                          (default ${XDG_CACHE_HOME:-$HOME/.cache}/coderag-image)
#   TORCH_WHEEL_INDEX      index with CPU torch wheels (default https://download.pytorch.org/whl/cpu; pip's own
#                          configuration, e.g. a local find-links, is tried first)
#   PIP_CERT               CA bundle pip uses here (default: pip's configured cert); handed to the build as a
#                          secret, so it is never stored in a layer
#   BUILDAH_STORAGE_DRIVER buildah storage driver (default vfs: works without fuse-overlayfs or kernel overlay)
#   CODERAG_IMAGE_PUSH     where to push the image afterwards, e.g. docker://registry.example.com/me/coderag:0.1.0
#                          (or oci:DIR:TAG); the pushed digest is printed and recorded: release that one
#   CODERAG_IMAGE_PUSH_FLAGS  extra `buildah push` flags, e.g. --authfile FILE, or --tls-verify=false for a
#                          registry on loopback
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the script too
cd "$(dirname "$0")/.."

VERSION="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
IMAGE="${CODERAG_IMAGE:-localhost/coderag:${VERSION}}"
CACHE="${CODERAG_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coderag-image}"
DEFAULT_BASE="$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)"
BUILDAH=(buildah --storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}")
RECORD="build/image.json"
# Debian packages of the local base: the interpreter (with venv for the builder stage), git for the promote step,
# Debian's own CA certificates for https (not the build host's bundle).
BASE_PACKAGES="python3,python3-venv,git,ca-certificates"
BASE_SUITE="bookworm"

die() { echo "build-image: $*" >&2; exit 1; }
command -v buildah >/dev/null || die "buildah is not installed: run scripts/install-system.sh (apt-get install buildah mmdebstrap)"
mkdir -p "$CACHE" build
# A run that fails leaves no record behind (a stale one could release another image's digest).
rm -f "$RECORD"

# Everything the image is made of; an image labelled with this key is reused instead of rebuilt.
inputs_key() {
  {
    echo "base=$1"
    find Dockerfile pyproject.toml README.md scripts/install.sh scripts/constraints.txt \
      coderag serving components pipelines -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
      | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-64
}

local_base() {
  # A Debian rootfs as a base image, for hosts that reach Debian's archive but no container registry.
  local key tarball name
  key="$(printf '%s\n' "$BASE_SUITE" "$BASE_PACKAGES" "$(mmdebstrap --version)" | sha256sum | cut -c1-16)"
  name="localhost/coderag-base:${BASE_SUITE}-${key}"
  if "${BUILDAH[@]}" inspect --type image "$name" >/dev/null 2>&1; then echo "$name"; return; fi
  command -v mmdebstrap >/dev/null || die "no base image: $DEFAULT_BASE cannot be pulled and mmdebstrap is not installed (run scripts/install-system.sh)"
  tarball="$CACHE/base-${BASE_SUITE}-${key}.tar"
  if [ ! -s "$tarball" ]; then
    echo "build-image: making a Debian ${BASE_SUITE} base with mmdebstrap ($BASE_PACKAGES)" >&2
    rm -rf "$tarball.part"
    mmdebstrap --quiet --format=tar --variant=minbase --include="$BASE_PACKAGES" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      "$BASE_SUITE" "$tarball.part" >&2
    mv "$tarball.part" "$tarball"
  fi
  local ctr
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" add "$ctr" "$tarball" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$name" >/dev/null
  echo "$name"
}

choose_base() {
  if [ -n "${CODERAG_BASE_IMAGE:-}" ]; then echo "$CODERAG_BASE_IMAGE"; return; fi
  if "${BUILDAH[@]}" inspect --type image "$DEFAULT_BASE" >/dev/null 2>&1 \
     || "${BUILDAH[@]}" pull --quiet "$DEFAULT_BASE" >/dev/null 2>&1; then
    echo "$DEFAULT_BASE"; return
  fi
  echo "build-image: cannot pull $DEFAULT_BASE; using a local mmdebstrap base" >&2
  local_base
}

torch_wheels() {
  # The CPU torch wheel, fetched on the host (where pip may know a local copy) into a build context of its own.
  local dir="$CACHE/wheels"
  mkdir -p "$dir"
  local download=(python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11
                  --platform manylinux_2_28_x86_64 --dest "$dir")
  if ! compgen -G "$dir/torch-2.13.0+cpu-*.whl" >/dev/null; then
    # pip's own configuration first (a local find-links or mirror), then the CPU index.
    "${download[@]}" "torch==2.13.0+cpu" >/dev/null 2>&1 \
      || "${download[@]}" --index-url "${TORCH_WHEEL_INDEX:-https://download.pytorch.org/whl/cpu}" "torch==2.13.0+cpu" >&2 \
      || die "cannot fetch the CPU torch 2.13.0 wheel: set TORCH_WHEEL_INDEX to an index that has it"
  fi
  echo "$dir"
}

ca_bundle() {
  local cert="${PIP_CERT:-}"
  if [ -z "$cert" ]; then cert="$(python3 -m pip config get global.cert 2>/dev/null || true)"; fi
  if [ -z "$cert" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then cert=/etc/ssl/certs/ca-certificates.crt; fi
  echo "$cert"
}

record() {
  # name, digest, size (bytes, uncompressed layers) of the tagged image, as build/image.json (written whole,
  # then renamed); with CODERAG_IMAGE_PUSH also the digest the destination got.
  local seconds="$1" base="$2" key="$3" pushed="${4:-}"
  "${BUILDAH[@]}" inspect --type image "$IMAGE" > "$RECORD.inspect"
  python3 - "$IMAGE" "$seconds" "$base" "$key" "$RECORD" "${CODERAG_IMAGE_PUSH:-}" "$pushed" <<'PY'
import json
import os
import sys

name, seconds, base, key, out, destination, pushed = sys.argv[1:]
inspect = json.load(open(out + ".inspect"))
layers = json.loads(inspect["Manifest"])["layers"]
size = sum(layer["size"] for layer in layers)
info = {"image": name, "id": inspect["FromImageID"], "digest": inspect["FromImageDigest"], "size_bytes": size,
        "layers": len(layers), "base": base, "inputs": key, "build_seconds": float(seconds)}
if destination:
    info["pushed"] = {"destination": destination, "digest": pushed}
with open(out + ".part", "w") as f:
    json.dump(info, f, indent=2)
os.replace(out + ".part", out)
os.remove(out + ".inspect")
print(f"image:  {name}")
print(f"digest: {info['digest']}")
print(f"size:   {size} bytes ({size / 1e9:.2f} GB uncompressed, {len(layers)} layers)")
print(f"base:   {base}")
print(f"build:  {float(seconds):.0f} s")
if destination:
    print(f"pushed: {destination} as {pushed}")
PY
}

push() {
  # The digest a registry knows the image by is the pushed manifest's (layers compressed on the way out).
  [ -n "${CODERAG_IMAGE_PUSH:-}" ] || return 0
  rm -f build/image.pushed-digest
  # shellcheck disable=SC2086  # the flags are words on purpose
  "${BUILDAH[@]}" push --quiet ${CODERAG_IMAGE_PUSH_FLAGS:-} --digestfile "build/image.pushed-digest" "$IMAGE" \
    "$CODERAG_IMAGE_PUSH" >&2 || die "cannot push $IMAGE to $CODERAG_IMAGE_PUSH (see buildah's message above)"
  cat build/image.pushed-digest
}

BASE="$(choose_base)"
KEY="$(inputs_key "$BASE")"
if [ "${CODERAG_IMAGE_REBUILD:-0}" != "1" ]; then
  existing="$("${BUILDAH[@]}" images --json --filter "label=org.coderag.inputs=$KEY" 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin) or []; print(d[0]["id"] if d else "")')"
  if [ -n "$existing" ]; then
    echo "build-image: reusing image $existing (built from these inputs)" >&2
    "${BUILDAH[@]}" tag "$existing" "$IMAGE"
    pushed="$(push)"
    record "$(cat "$CACHE/build-seconds-$KEY" 2>/dev/null || echo 0)" "$BASE" "$KEY" "$pushed"
    exit 0
  fi
fi

WHEELS="$(torch_wheels)"
SECRET=()
CERT="$(ca_bundle)"
if [ -n "$CERT" ]; then SECRET=(--secret "id=pip-cert,src=$CERT"); fi
echo "build-image: building $IMAGE on $BASE" >&2
start=$(date +%s)
"${BUILDAH[@]}" bud --isolation chroot --network host --layers=false \
  --build-arg "BASE_IMAGE=$BASE" --build-arg "TORCH_INDEX_URL=" \
  --build-context "wheels=$WHEELS" "${SECRET[@]}" \
  --label "org.coderag.inputs=$KEY" --label "org.opencontainers.image.version=$VERSION" \
  --tag "$IMAGE" -f Dockerfile . >&2
seconds=$(( $(date +%s) - start ))
echo "$seconds" > "$CACHE/build-seconds-$KEY"
# The image this one replaced under the same tag is untagged now: drop it (vfs keeps every layer in full).
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
pushed="$(push)"
record "$seconds" "$BASE" "$KEY" "$pushed"
