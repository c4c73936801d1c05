#!/usr/bin/env bash
# Builds Kiln's two images: the platform (Dockerfile: components, servers, controllers) as kiln:VERSION and the edge
# agent (edge/Dockerfile) as kiln-edge:VERSION. Run it through scripts/docker-engine.sh (`make images` does).
#   scripts/images.sh                    # on a base made here from Debian packages (no registry needed)
#   KILN_BASE_IMAGE=python:3.11.11-slim-bookworm scripts/images.sh   # on the public Python image, where it can be pulled
# The base made here (kiln-base:bookworm: Debian bookworm's Python 3.11 with pip and venv) is built once with
# debootstrap from the Debian mirror apt uses, kept as a tarball in the cache and imported when the engine lacks it.
# Builds use the host's network (`--network host`); the host's CA bundle goes into the build context for pip and uv.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

CACHE=${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}/images
BASE=${KILN_BASE_IMAGE:-kiln-base:bookworm}
VERSION=$(awk -F'"' '/^version = /{print $2; exit}' pyproject.toml)
EDGE_VERSION=$(awk -F'"' '/^version = /{print $2; exit}' edge/pyproject.toml)
export DOCKER_BUILDKIT=0  # the legacy builder: Debian's engine has no buildx, and --network host works with it

make_base() {
  local tarball=$CACHE/kiln-base-bookworm.tar
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "error: debootstrap is missing (make setup installs it)" >&2; exit 2; }
    local mirror root
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || { echo "error: no Debian mirror found in apt's sources" >&2; exit 2; }
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    say "making the base from Debian bookworm ($mirror): about a minute, once"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
      bookworm "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
      || { echo "error: debootstrap failed; log: $CACHE/debootstrap.log" >&2; exit 2; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$root"
    trap - EXIT
  fi
  say "importing $BASE from $tarball"
  docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' "$tarball" "$BASE" >/dev/null
}

build() {  # build TAG DOCKERFILE CONTEXT
  local tag=$1 dockerfile=$2 context=$3 started
  mkdir -p "$context/.build"
  cp /etc/ssl/certs/ca-certificates.crt "$context/.build/host-ca.crt"
  started=$(date +%s)
  say "building $tag on $BASE"
  local log="$CACHE/build-${tag%%:*}.log"
  docker build --network host --build-arg "BASE=$BASE" -t "$tag" -f "$dockerfile" "$context" >"$log" 2>&1 || {
    # Debian's engine now and then cannot mount a layer it has just committed; the steps done are cached, so again.
    grep -q "error creating overlay mount" "$log" && say "the engine could not mount a layer; building $tag again" \
      && docker build --network host --build-arg "BASE=$BASE" -t "$tag" -f "$dockerfile" "$context" >"$log" 2>&1
  } || { echo "error: building $tag failed; the log ends:" >&2; tail -30 "$log" >&2; exit 2; }
  printf '%s built in %s s, %s\n' "$tag" "$(( $(date +%s) - started ))" \
    "$(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1 / 1e9}')"
}

mkdir -p "$CACHE"
docker image inspect "$BASE" >/dev/null 2>&1 || {
  [ "$BASE" = kiln-base:bookworm ] || { say "pulling $BASE"; docker pull "$BASE" >/dev/null; }
  [ "$BASE" != kiln-base:bookworm ] || make_base
}
build "kiln:$VERSION" Dockerfile .
build "kiln-edge:$EDGE_VERSION" edge/Dockerfile edge
