#!/usr/bin/env bash
# Build the three fedwarden images with podman, from a Debian base made locally, and smoke-test
# them: an aggregator and two clients as containers talking mTLS on 127.0.0.1.
#
# Usage: hack/images.sh [all|base|wheels|build|smoke]   (default: all, i.e. the four in order)
#
#   base    localhost/fedwarden-base:bookworm, made with debootstrap (minbase + python3,
#           python3-venv, ca-certificates) and `podman import`; skipped when it exists
#           (FEDWARDEN_REBUILD_BASE=1 remakes it). No image registry is needed.
#   wheels  `pip wheel '.[all]' -w dist/wheels` on the host (the containers cannot reach PyPI);
#           the host's Python must be the base's (3.11, bookworm). Each image installs only its
#           role's extra from them (images/build-venv.sh).
#   build   ghcr.io/fedwarden/{operator,aggregator,client}:<version> (the chart's and the
#           operator's default image names), from images/*/Dockerfile with BASE_IMAGE the base
#   smoke   certificates from `fedwarden pki` on the host, mounted read-only; an aggregator
#           and two clients with --network host and --read-only; the aggregator must exit 0
#           after 2 rounds of digits-logreg
#
# Installs debootstrap and podman (and runc) with apt-get when missing. Each step's time is
# printed. Settings: FEDWARDEN_IMAGE_PREFIX (default ghcr.io/fedwarden), FEDWARDEN_IMAGE_TAG
# (default: the package version), PYTHON (default .venv/bin/python, else python3),
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."

STEP="${1:-all}"
PREFIX="${FEDWARDEN_IMAGE_PREFIX:-ghcr.io/fedwarden}"
BASE="localhost/fedwarden-base:bookworm"
PYTHON="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
TAG="${FEDWARDEN_IMAGE_TAG:-$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# podman here: runc (crun is not installed), and ulimits the build's containers may set
PODMAN=(podman --runtime runc)
BUILD_LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

log() { printf '[images] %s\n' "$*" >&2; }
timed() {  # timed NAME CMD...: run, then print how long it took
    local name="$1" start rc=0
    shift
    start="$(date +%s.%N)"
    "$@" || rc=$?
    log "$name: $(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)") s (exit $rc)"
    return "$rc"
}

need_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v bc >/dev/null || missing+=(bc)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

make_base() {
    if [[ -z "${FEDWARDEN_REBUILD_BASE:-}" ]] && "${PODMAN[@]}" image exists "$BASE"; then
        log "$BASE exists; not rebuilt (FEDWARDEN_REBUILD_BASE=1 remakes it)"
        return
    fi
    local root
    root="$(mktemp -d "${TMPDIR:-/tmp}/fedwarden-base.XXXXXX")"
    timed debootstrap debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates bookworm "$root" "$MIRROR" >/dev/null
    # smaller: no apt lists, docs or caches in the image
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/locale/*
    timed "podman import" bash -c "tar -C '$root' -c . | ${PODMAN[*]} import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD [\"/bin/bash\"]' - '$BASE' >/dev/null"
    rm -rf "$root"
}

make_wheels() {
    local want have
    want="$("${PODMAN[@]}" run --rm "$BASE" python3 -c 'import sys; print(sys.version_info[:2])' 2>/dev/null || true)"
    have="$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')"
    if [[ -n "$want" && "$want" != "$have" ]]; then
        log "the host's Python $have differs from the base's $want: wheels would not match"
        exit 1
    fi
    rm -rf dist/wheels
    timed "pip wheel" "$PYTHON" -m pip wheel --quiet '.[all]' -w dist/wheels
    log "dist/wheels: $(find dist/wheels -name '*.whl' | wc -l) wheels, $(du -sh dist/wheels | cut -f1)"
}

build_images() {
    local c revision
    revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    for c in operator aggregator client; do
        timed "build $c" "${PODMAN[@]}" build "${BUILD_LIMITS[@]}" --quiet \
            --build-arg BASE_IMAGE="$BASE" --build-arg VERSION="$TAG" \
            --build-arg REVISION="$revision" \
            -f "images/$c/Dockerfile" -t "$PREFIX/$c:$TAG" . >/dev/null
        log "$PREFIX/$c:$TAG: $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$PREFIX/$c:$TAG" \
            | awk '{printf "%.0f MiB", $1/1048576}')"
    done
}

smoke() {
    local dir port c rc=0 i
    dir="$(mktemp -d "${TMPDIR:-/tmp}/fedwarden-smoke.XXXXXX")"
    port="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    local fw=("$PYTHON" -m fedwarden.cli)
    [[ -x .venv/bin/fedwarden ]] && fw=(.venv/bin/fedwarden)
    "${fw[@]}" pki init-ca --training smoke --namespace smoke --out "$dir/ca" >/dev/null
    "${fw[@]}" pki server --ca-dir "$dir/ca" --dns localhost --ip 127.0.0.1 --out "$dir/server" >/dev/null
    for i in 0 1; do
        "${fw[@]}" pki issue --ca-dir "$dir/ca" --client "site-$i" --out "$dir/site-$i" >/dev/null
    done
    # the containers run as 65532: they may read their certificates, never the CA's key
    mkdir "$dir/trust" && cp "$dir/ca/crl.pem" "$dir/trust/"
    chown -R 65532:65532 "$dir/server" "$dir/site-0" "$dir/site-1" "$dir/trust"
    local run=("${PODMAN[@]}" run "${BUILD_LIMITS[@]}" --network host --read-only --cap-drop ALL
        --security-opt no-new-privileges)
    local names=(fedwarden-smoke-aggregator fedwarden-smoke-site-0 fedwarden-smoke-site-1)
    "${PODMAN[@]}" rm -f "${names[@]}" >/dev/null 2>&1 || true
    local start
    start="$(date +%s.%N)"
    "${run[@]}" -d --name fedwarden-smoke-aggregator \
        -v "$dir/server:/tls:ro" -v "$dir/trust:/trust:ro" "$PREFIX/aggregator:$TAG" \
        --tls-dir /tls --crl /trust/crl.pem --listen "127.0.0.1:$port" --rounds 2 \
        --task digits-logreg --min-available 2 --poll-timeout 1 --quiet --json >/dev/null
    for i in 0 1; do
        "${run[@]}" -d --name "fedwarden-smoke-site-$i" -v "$dir/site-$i:/tls:ro" \
            "$PREFIX/client:$TAG" --tls-dir /tls --server "127.0.0.1:$port" \
            --server-name localhost --task digits-logreg --partition iid --client-index "$i" \
            --num-clients 2 --json --backoff-max 0.5 --give-up-after 120 >/dev/null
    done
    local code
    timeout 300 "${PODMAN[@]}" wait fedwarden-smoke-aggregator >/dev/null || true
    # the exit code from inspect (wait also answers for a container that never started)
    code="$("${PODMAN[@]}" inspect --format '{{.State.Status}}:{{.State.ExitCode}}' \
        fedwarden-smoke-aggregator)"
    [[ "$code" == exited:0 ]] && code=0
    for c in "${names[@]}"; do
        [[ "$c" == fedwarden-smoke-aggregator ]] || timeout 60 "${PODMAN[@]}" wait "$c" >/dev/null || true
    done
    log "smoke: aggregator exit $code after $(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)") s"
    "${PODMAN[@]}" logs fedwarden-smoke-aggregator 2>&1 | tail -c 1500 >&2
    for c in fedwarden-smoke-site-0 fedwarden-smoke-site-1; do
        log "$c: exit $("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$c")"
    done
    if [[ "$code" != 0 ]] || ! "${PODMAN[@]}" logs fedwarden-smoke-aggregator 2>/dev/null \
        | grep -q '"status": *"completed"'; then
        for c in "${names[@]}"; do log "--- $c"; "${PODMAN[@]}" logs "$c" 2>&1 | tail -n 30 >&2; done
        rc=1
    fi
    "${PODMAN[@]}" rm -f "${names[@]}" >/dev/null 2>&1 || true
    rm -rf "$dir"
    return "$rc"
}

need_tools
case "$STEP" in
    base) timed base make_base ;;
    wheels) make_wheels ;;
    build) build_images ;;
    smoke) timed smoke smoke ;;
    all)
        timed base make_base
        make_wheels
        build_images
        timed smoke smoke
        ;;
    *) log "unknown step $STEP (all|base|wheels|build|smoke)"; exit 2 ;;
esac
