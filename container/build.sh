#!/bin/bash
# Build the Visual Runtime images without any registry but Debian's and PyPI.
#
#   container/build.sh [base|wheels|session|gateway|all] [--force]
#
# base     debian:bookworm-slim: pulled if a registry answers, otherwise made
#          locally with debootstrap (minbase) from Debian's mirror and
#          `docker import`ed under that name.
# wheels   build/wheelhouse: `pip wheel` of the project and its dependencies,
#          built on the host with the project's Python (3.11, like Debian's
#          python3 in the image), so `docker build` needs no network but apt.
# session  visual-runtime-session:<content hash> and :latest (the pod image).
# gateway  visual-runtime-gateway:<content hash> and :latest (compose).
# all      all of the above (the default is "session", which implies base
#          and wheels).
#
# The content hash covers container/, agent_side/, wire/ and pyproject.toml (plus
# gateway/, visual_runtime_client/ and web/ for the gateway image); it is the image tag and the label org.visual-runtime.content-hash, so a
# build is skipped when an image with the same hash exists (--force rebuilds).
# Builds run under `nice -n 10`: CI machines have 2 cores and are shared.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$ROOT/build"
BASE_IMAGE="${VR_BASE_IMAGE:-debian:bookworm-slim}"
SESSION_IMAGE="${VR_SESSION_IMAGE:-visual-runtime-session}"
GATEWAY_IMAGE="${VR_GATEWAY_IMAGE:-visual-runtime-gateway}"
MIRROR="${VR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${VR_PYTHON:-$ROOT/.venv/bin/python}"
NICE=(nice -n 10)
FORCE=0
TARGET=session
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    base|wheels|session|gateway|all|hash) TARGET="$arg" ;;
    *) echo "usage: $0 [base|wheels|session|gateway|all|hash] [--force]" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
step() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
# Indent a tool's progress lines and stamp each with the build's elapsed seconds,
# so a long silent step (apt in docker build) shows how long it has been running.
stamp() { while IFS= read -r line; do printf '   [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$line"; done; }

content_hash() {
  # Stable over checkouts: paths and contents of the sources an image holds.
  # The session image runs agent_side (and the shared wire/); the gateway image also
  # gateway/, the client library and web/.
  local dirs=(container agent_side wire pyproject.toml)
  [ "${1:-}" = gateway ] && dirs+=(gateway visual_runtime_client web)
  (cd "$ROOT" && find "${dirs[@]}" -type f \
      ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z \
      | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

build_base() {
  if image_exists "$BASE_IMAGE"; then
    step "base: $BASE_IMAGE present"
    return
  fi
  step "base: trying to pull $BASE_IMAGE"
  if timeout 60 docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
    step "base: pulled $BASE_IMAGE"
    return
  fi
  command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  local dir="$BUILD/rootfs-bookworm"
  rm -rf "$dir"
  mkdir -p "$dir"
  step "base: no registry; debootstrap --variant=minbase bookworm from $MIRROR (a few minutes)"
  "${NICE[@]}" debootstrap --variant=minbase bookworm "$dir" "$MIRROR" 2>&1 \
    | grep --line-buffered -E '^I: (Retrieving|Validating|Extracting|Installing|Configuring|Base system)' \
    | awk '{ n++; if (n % 25 == 1 || /Base system/) { print $0; fflush() } }' | stamp
  # What the official slim image drops: caches, docs, man pages, apt lists.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
         "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
  cat > "$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
    > "$dir/etc/dpkg/dpkg.cfg.d/docker-excludes"
  echo "deb $MIRROR bookworm main" > "$dir/etc/apt/sources.list"
  step "base: docker import as $BASE_IMAGE ($(du -sh "$dir" | cut -f1))"
  tar -C "$dir" --numeric-owner -c . \
    | docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
  rm -rf "$dir"
}

build_wheels() {
  local stamp="$BUILD/wheelhouse/.hash" want
  want="$( (cd "$ROOT" && sha256sum pyproject.toml && find agent_side gateway wire visual_runtime_client -name '*.py' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)"
  if [ "$FORCE" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    step "wheels: build/wheelhouse up to date"
    return
  fi
  step "wheels: pip wheel of the project and its dependencies into build/wheelhouse"
  mkdir -p "$BUILD/wheelhouse"
  # The versions the project is tested with: those of the host venv.
  "$PYTHON" -m pip freeze --exclude-editable | grep -iv '^visual[-_]runtime' > "$BUILD/constraints.txt"
  rm -f "$BUILD"/wheelhouse/visual_runtime-*.whl
  if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "${NICE[@]}" "$PYTHON" -m pip wheel --quiet \
      --wheel-dir "$BUILD/wheelhouse" --find-links "$BUILD/wheelhouse" \
      --constraint "$BUILD/constraints.txt" "$ROOT" > "$BUILD/pip-wheel.log" 2>&1; then
    cat "$BUILD/pip-wheel.log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
  step "wheels: $(ls "$BUILD"/wheelhouse/*.whl | wc -l) wheels, $(du -sh "$BUILD/wheelhouse" | cut -f1)"
}

context_dir() {
  # A small build context: container/ plus the wheelhouse, never the repo's .venv.
  local ctx="$BUILD/context"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -a "$ROOT"/container/. "$ctx"/
  cp -a "$BUILD/wheelhouse" "$ctx/wheelhouse"
  # The gateway runs from the source tree (it serves web/ beside gateway/).
  mkdir -p "$ctx/src"
  (cd "$ROOT" && tar -c --exclude=__pycache__ gateway agent_side wire visual_runtime_client web) | tar -C "$ctx/src" -x
  echo "$ctx"
}

build_image() {
  local name="$1" dockerfile="$2" kind="$3" hash ctx
  hash="$(content_hash "$kind")"
  if [ "$FORCE" = 0 ] && image_exists "$name:$hash"; then
    step "$name:$hash is up to date"
    docker tag "$name:$hash" "$name:latest"
    return
  fi
  build_base
  build_wheels
  ctx="$(context_dir)"
  step "$name: docker build (hash $hash)"
  "${NICE[@]}" docker build -f "$ctx/$dockerfile" -t "$name:$hash" -t "$name:latest" \
    --label "org.visual-runtime.content-hash=$hash" "$ctx" 2>&1 \
    | grep --line-buffered -E '^(Step [0-9]+/[0-9]+|Successfully|Setting up (chromium|xvfb|python3\.11|x11vnc|fluxbox|xterm) |E: |error|ERROR)' \
    | stamp
  image_exists "$name:$hash" || { echo "docker build of $name failed" >&2; exit 1; }
  step "$name:$hash built, $(docker image inspect -f '{{.Size}}' "$name:$hash" | awk '{printf "%.0f MB", $1/1e6}')"
  # Old tags of this image only take disk space.
  docker images --format '{{.Repository}}:{{.Tag}}' "$name" \
    | grep -v -e ":$hash\$" -e ':latest$' | xargs -r docker rmi >/dev/null 2>&1 || true
}

case "$TARGET" in
  hash) content_hash session; exit 0 ;;
  base) build_base ;;
  wheels) build_wheels ;;
  session) build_image "$SESSION_IMAGE" Dockerfile session ;;
  gateway) build_image "$GATEWAY_IMAGE" Dockerfile.gateway gateway ;;
  all) build_image "$SESSION_IMAGE" Dockerfile session
       build_image "$GATEWAY_IMAGE" Dockerfile.gateway gateway ;;
esac
step "done"
