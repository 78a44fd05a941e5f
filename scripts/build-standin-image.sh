#!/usr/bin/env bash
# Build the local Docker image that plays vLLM in tests, with no registry involved.
#
# Usage: DOCKER_HOST=unix://... scripts/build-standin-image.sh DIR [SERVER_PY]
#
#   DIR        cache folder: the Debian root filesystem is kept there as a tarball
#              (DIR/rootfs-bookworm-python3.tar, ~160 MB) so later builds take seconds
#   SERVER_PY  the stand-in server (default: tests/standins/openai_server.py of this repo)
#
# Makes the image `local/vllm-standin:test`, also tagged `vllm/vllm-openai:jarvis-test`:
# Debian bookworm minbase + python3 (debootstrap from Debian's archive), the server at
# /app/openai_server.py, ENTRYPOINT ["python3","/app/openai_server.py"], so that, as with
# the real vllm/vllm-openai image, the container command is just `MODEL --host ... --port ...`.
# Idempotent: nothing is done when the image already holds this very server file built by
# this recipe (the image's env JARVIS_STANDIN_KEY=<recipe>-<sha256 of the server file>).
# Needs root, debootstrap (scripts/dockerd.sh start installs it) and a running engine
# (DOCKER_HOST, e.g. from scripts/dockerd.sh start DIR).
set -euo pipefail

log() { echo "build-standin-image: $*" >&2; }
if [ $# -lt 1 ] || [ $# -gt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
SERVER="${2:-$REPO/tests/standins/openai_server.py}"
IMAGE="${STANDIN_IMAGE:-local/vllm-standin:test}"
ALIAS="${STANDIN_IMAGE_ALIAS:-vllm/vllm-openai:jarvis-test}"
SUITE=bookworm
RECIPE=1          # bump when the image recipe below changes, so existing images are rebuilt
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_TAR="$DIR/rootfs-$SUITE-python3.tar"

[ -f "$SERVER" ] || { log "no stand-in server file at $SERVER"; exit 1; }
if [ -z "${DOCKER_HOST:-}" ]; then
    log "DOCKER_HOST is not set (start an engine with scripts/dockerd.sh start DIR)"
    exit 1
fi
DOCKER=(docker)
command -v docker >/dev/null 2>&1 || { log "no docker client on PATH"; exit 1; }

SHA="$(sha256sum "$SERVER" | cut -d' ' -f1)"
KEY="$RECIPE-$SHA"
current="$("${DOCKER[@]}" image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" 2>/dev/null \
           | sed -n 's/^JARVIS_STANDIN_KEY=//p' || true)"
if [ "$current" = "$KEY" ]; then
    "${DOCKER[@]}" tag "$IMAGE" "$ALIAS"
    log "$IMAGE is up to date (server sha256 ${SHA:0:12})"
    echo "$IMAGE"
    exit 0
fi

old_id="$("${DOCKER[@]}" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
start=$(date +%s)
if [ ! -s "$BASE_TAR" ]; then
    command -v debootstrap >/dev/null 2>&1 || {
        log "installing debootstrap with apt"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
    }
    ROOTFS="$DIR/rootfs.tmp"
    cleanup_rootfs() {
        # debootstrap mounts proc/sys inside the target; never leave them behind.
        awk -v d="$ROOTFS/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r \
            | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
        rm -rf "$ROOTFS"
    }
    trap cleanup_rootfs EXIT
    cleanup_rootfs
    log "debootstrap --variant=minbase --include=python3 $SUITE ($MIRROR; ~70 s; log: $DIR/debootstrap.log)"
    if ! debootstrap --variant=minbase --include=python3 "$SUITE" "$ROOTFS" "$MIRROR" >"$DIR/debootstrap.log" 2>&1; then
        log "debootstrap failed; last lines of $DIR/debootstrap.log:"
        tail -n 20 "$DIR/debootstrap.log" >&2
        [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 20 "$ROOTFS/debootstrap/debootstrap.log" >&2
        exit 1
    fi
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/debootstrap
    tar -C "$ROOTFS" --numeric-owner -cf "$BASE_TAR.part" .
    mv "$BASE_TAR.part" "$BASE_TAR"
    cleanup_rootfs
    trap - EXIT
    log "rootfs tarball: $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1)) in $(( $(date +%s) - start )) s"
fi

WORK="$(mktemp -d "$DIR/import.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/app"
install -m 0644 "$SERVER" "$WORK/app/openai_server.py"
cp "$BASE_TAR" "$WORK/image.tar"
tar -C "$WORK" --numeric-owner --owner=0 --group=0 -rf "$WORK/image.tar" ./app
t0=$(date +%s)
"${DOCKER[@]}" import \
    -c 'ENTRYPOINT ["python3","/app/openai_server.py"]' \
    -c 'EXPOSE 8000' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV PYTHONUNBUFFERED=1' \
    -c "ENV JARVIS_STANDIN_KEY=$KEY" \
    -m "Jarvis vLLM stand-in ($(basename "$SERVER") sha256 $SHA)" \
    "$WORK/image.tar" "$IMAGE" >/dev/null
"${DOCKER[@]}" tag "$IMAGE" "$ALIAS"
if [ -n "$old_id" ]; then    # drop the image this one replaces, unless a container still uses it
    "${DOCKER[@]}" image rm "$old_id" >/dev/null 2>&1 || true
fi
log "built $IMAGE (+ $ALIAS) in $(( $(date +%s) - start )) s (import $(( $(date +%s) - t0 )) s)"
echo "$IMAGE"
