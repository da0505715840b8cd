#!/usr/bin/env bash
# Build the three fedwarden images with podman, from a Debian base made locally, and smoke-test
# them: an aggregator and two clients as containers talking mTLS on 127.0.0.1.
#
# Usage: hack/images.sh [all|base|wheels|build|check|smoke|sizes]
#        (default: all = base, wheels, build, check and smoke, in that order)
#
#   base    localhost/fedwarden-base:bookworm, made with debootstrap (minbase + python3,
#           python3-venv, ca-certificates) and `podman import`; skipped when it exists
#           (FEDWARDEN_REBUILD_BASE=1 remakes it). No image registry is needed.
#   wheels  `pip wheel '.[all]' -w dist/wheels` on the host (the containers cannot reach PyPI);
#           the host's Python must be the base's (3.11, bookworm). Each image installs only its
#           role's extra from them (images/build-venv.sh).
#   build   ghcr.io/fedwarden/{operator,aggregator,client}:<version> (the chart's and the
#           operator's default image names), from images/*/Dockerfile with BASE_IMAGE the base
#   check   each image as the cluster runs it (read-only root, user 65532, no capabilities):
#           the operator's command starts, the client and aggregator load every data set
#   smoke   certificates from `fedwarden pki` on the host, mounted read-only; an aggregator
#           and two clients with --network host and --read-only; the aggregator must exit 0
#           after 2 rounds of digits-logreg, and so must both clients
#   sizes   each image's size and its virtualenv's largest packages
#
# Installs debootstrap and podman (and runc) with apt-get when missing. Each step's time is
# printed; every step has a time limit, and the smoke test's containers are removed however it
# ends. Settings: FEDWARDEN_IMAGE_PREFIX (default ghcr.io/fedwarden), FEDWARDEN_IMAGE_TAG
# (default: the package version), PYTHON (default .venv/bin/python, else python3),
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."

STEP="${1:-all}"
PREFIX="${FEDWARDEN_IMAGE_PREFIX:-ghcr.io/fedwarden}"
BASE="localhost/fedwarden-base:bookworm"
ROLES=(operator aggregator client)
PYTHON="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
TAG="${FEDWARDEN_IMAGE_TAG:-$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# podman here: runc (crun is not installed), and ulimits the build's containers may set
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
SMOKE_NAMES=(fedwarden-smoke-aggregator fedwarden-smoke-site-0 fedwarden-smoke-site-1)

log() { printf '[images] %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
# timed NAME CMD...: run, then print how long it took. Not `"$@" || rc=$?`: under a `||`, bash
# ignores `set -e` in the whole function it runs, and a failed step would carry on. A failure
# ends the script instead, and the EXIT trap names the step.
RUNNING=
timed() {
    local name="$1" start outer="$RUNNING"
    shift
    start="$(now)"
    RUNNING="$name"
    "$@"
    RUNNING="$outer"
    log "$name: $(since "$start") s"
}
# limit SECONDS CMD...: the command, stopped when it overruns (exit 124). It runs in the
# background and the script waits for it: bash runs a trap only between foreground commands, so
# a signal to this script would otherwise wait for, say, a whole build.
CHILD=
limit() {
    local seconds="$1"
    shift
    local rc=0
    timeout --kill-after=30 "$seconds" "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=  # reaped: its number may be another process's now
    return "$rc"
}

# whatever happens (failure, timeout, ^C, kill): the running command stopped, no smoke
# containers and no temporary directories left
TEMP_DIRS=()
cleanup() {
    local rc=$?
    if [[ -n "$CHILD" ]]; then kill "$CHILD" 2>/dev/null || true; fi
    if ((rc)); then log "failed${RUNNING:+ in $RUNNING} (exit $rc)"; fi
    "${PODMAN[@]}" rm -f -t 0 "${SMOKE_NAMES[@]}" >/dev/null 2>&1 || true
    if ((${#TEMP_DIRS[@]})); then rm -rf "${TEMP_DIRS[@]}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v bc >/dev/null || missing+=(bc)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt-get"
        limit 300 apt-get update -qq
        DEBIAN_FRONTEND=noninteractive limit 600 apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

make_base() {
    if [[ -z "${FEDWARDEN_REBUILD_BASE:-}" ]] && "${PODMAN[@]}" image exists "$BASE"; then
        log "$BASE exists; not rebuilt (FEDWARDEN_REBUILD_BASE=1 remakes it)"
        return
    fi
    local root
    root="$(mktemp -d "${TMPDIR:-/tmp}/fedwarden-base.XXXXXX")"
    TEMP_DIRS+=("$root")
    timed debootstrap limit 900 debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates bookworm "$root" "$MIRROR" >/dev/null
    # smaller: no apt lists, docs or caches in the image
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/locale/*
    timed "podman import" limit 300 bash -c "tar -C '$root' -c . | ${PODMAN[*]} import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD [\"/bin/bash\"]' - '$BASE' >/dev/null"
    rm -rf "$root"
}

make_wheels() {
    local want have
    want="$(timeout 120 "${PODMAN[@]}" run --rm "${LIMITS[@]}" "$BASE" python3 -c 'import sys; print(sys.version_info[:2])' 2>/dev/null || true)"
    have="$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')"
    if [[ -n "$want" && "$want" != "$have" ]]; then
        log "the host's Python $have differs from the base's $want: wheels would not match"
        exit 1
    fi
    # build/ is setuptools' (ignored by git): a module deleted from the sources would linger
    # there, and so in the wheel
    rm -rf dist/wheels build
    timed "pip wheel" limit 1200 "$PYTHON" -m pip wheel --quiet '.[all]' -w dist/wheels
    log "dist/wheels: $(find dist/wheels -name '*.whl' | wc -l) wheels, $(du -sh dist/wheels | cut -f1)"
}

image_size() {
    "${PODMAN[@]}" image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'
}

# --layers=false: no layer cache, hence no builder-stage images left behind (each ~0.5 GB); the
# builder's one RUN would rerun anyway whenever a source changes (the fedwarden wheel does). The
# image a new build replaces is removed too, unless a container still uses it.
build_images() {
    local c ref old revision
    revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    for c in "${ROLES[@]}"; do
        ref="$PREFIX/$c:$TAG"
        old="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)"
        timed "build $c" limit 1800 "${PODMAN[@]}" build "${LIMITS[@]}" --layers=false --quiet \
            --build-arg BASE_IMAGE="$BASE" --build-arg VERSION="$TAG" \
            --build-arg REVISION="$revision" -f "images/$c/Dockerfile" -t "$ref" . >/dev/null
        if [[ -n "$old" && "$old" != "$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$ref")" ]]; then
            "${PODMAN[@]}" rmi "$old" >/dev/null 2>&1 || true
        fi
        log "$ref: $(image_size "$ref")"
    done
}

# how the cluster runs them: read-only root, the image's user 65532, no capabilities
# (--pull never: the images are local; a missing one must not send podman to a registry)
RUN=("${PODMAN[@]}" run "${LIMITS[@]}" --pull never --read-only --cap-drop ALL
    --security-opt no-new-privileges)

check_images() {
    local c out
    # (into a file, not a pipe: limit must run in this shell, see limit)
    out="$(mktemp "${TMPDIR:-/tmp}/fedwarden-check.XXXXXX")"
    TEMP_DIRS+=("$out")
    limit 120 "${RUN[@]}" --rm "$PREFIX/operator:$TAG" --help >/dev/null
    log "operator: \`fedwarden operator --help\` runs"
    for c in aggregator client; do
        limit 300 "${RUN[@]}" --rm --entrypoint python "$PREFIX/$c:$TAG" -c '
from fedwarden.sim.datasets import DATASETS, load_dataset
for name in DATASETS:
    load_dataset(name)
print(", ".join(DATASETS))' >"$out"
        log "$c loads: $(cat "$out")"
    done
}

smoke() {
    local dir port c rc=0 i start code logs
    dir="$(mktemp -d "${TMPDIR:-/tmp}/fedwarden-smoke.XXXXXX")"
    TEMP_DIRS+=("$dir")
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
    "${PODMAN[@]}" rm -f -t 0 "${SMOKE_NAMES[@]}" >/dev/null 2>&1 || true
    start="$(now)"
    "${RUN[@]}" --network host -d --name fedwarden-smoke-aggregator \
        -v "$dir/server:/tls:ro" -v "$dir/trust:/trust:ro" "$PREFIX/aggregator:$TAG" \
        --tls-dir /tls --crl /trust/crl.pem --listen "127.0.0.1:$port" --rounds 2 \
        --task digits-logreg --min-available 2 --poll-timeout 1 --quiet --json >/dev/null
    for i in 0 1; do
        "${RUN[@]}" --network host -d --name "fedwarden-smoke-site-$i" -v "$dir/site-$i:/tls:ro" \
            "$PREFIX/client:$TAG" --tls-dir /tls --server "127.0.0.1:$port" \
            --server-name localhost --task digits-logreg --partition iid --client-index "$i" \
            --num-clients 2 --json --backoff-max 0.5 --give-up-after 120 >/dev/null
    done
    limit 300 "${PODMAN[@]}" wait fedwarden-smoke-aggregator >/dev/null || true
    for c in fedwarden-smoke-site-0 fedwarden-smoke-site-1; do
        limit 60 "${PODMAN[@]}" wait "$c" >/dev/null || true
    done
    log "smoke: $(since "$start") s"
    "${PODMAN[@]}" logs fedwarden-smoke-aggregator 2>&1 | tail -c 1500 >&2
    # the exit code from inspect (wait also answers for a container that never started, and
    # a container still running after its time shows as running)
    for c in "${SMOKE_NAMES[@]}"; do
        code="$("${PODMAN[@]}" inspect --format '{{.State.Status}}:{{.State.ExitCode}}' "$c")"
        log "$c: $code"
        [[ "$code" == exited:0 ]] || rc=1
    done
    # (the logs in a variable: with pipefail, `podman logs | grep -q` fails when grep stops
    # reading first)
    logs="$("${PODMAN[@]}" logs fedwarden-smoke-aggregator 2>/dev/null || true)"
    if ! grep -q '"status": *"completed"' <<<"$logs"; then
        log "the aggregator's report does not say completed"
        rc=1
    fi
    if ((rc)); then
        for c in "${SMOKE_NAMES[@]}"; do log "--- $c"; "${PODMAN[@]}" logs "$c" 2>&1 | tail -n 30 >&2; done
    fi
    return "$rc"
}

sizes() {
    local c
    for c in "${ROLES[@]}"; do
        log "$PREFIX/$c:$TAG: $(image_size "$PREFIX/$c:$TAG"); its virtualenv's largest, MB:"
        "${RUN[@]}" --rm --entrypoint sh "$PREFIX/$c:$TAG" -c \
            'du -sm /opt/fedwarden; cd /opt/fedwarden/lib/python3*/site-packages && du -sm -- * | sort -rn | head -n 12' \
            | awk '{printf "  %5d %s\n", $1, $2}' >&2
    done
}

need_tools
case "$STEP" in
    base) timed base make_base ;;
    wheels) make_wheels ;;
    build) build_images ;;
    check) timed check check_images ;;
    smoke) timed smoke smoke ;;
    sizes) sizes ;;
    all)
        total="$(now)"
        timed base make_base
        make_wheels
        build_images
        timed check check_images
        timed smoke smoke
        log "all: $(since "$total") s"
        ;;
    *) log "unknown step $STEP (all|base|wheels|build|check|smoke|sizes)"; exit 2 ;;
esac
