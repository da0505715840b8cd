#!/usr/bin/env bash
# Build the test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) from the
# upstream Go modules, fetched through the Go module proxy, with the machine's Go toolchain.
#
# Usage: hack/control-plane.sh            build what is missing, then check the binaries run
#        hack/control-plane.sh --print-dir print the directory the binaries go to (bin/ below it)
#
# The binaries land in ${FEDWARDEN_CONTROL_PLANE_DIR:-$HOME/.cache/fedwarden/control-plane/
# <kubernetes-version>-etcd<etcd-version>}/bin/. A second run with the binaries present builds
# nothing and only checks that each answers --version. fedwarden.testing.controlplane looks in
# the same place. Override the versions with FEDWARDEN_KUBERNETES_VERSION / FEDWARDEN_ETCD_VERSION
# (the cache directory name follows them).
#
# Why a throwaway module: `go install k8s.io/kubernetes/cmd/...@vX` refuses modules whose go.mod
# has replace directives, and both k8s.io/kubernetes (its staging modules) and
# go.etcd.io/etcd/server/v3 (its sibling modules) have them. A module of our own that requires
# the release and replaces every staging module k8s.io/X by the published k8s.io/X v0.<minor>.<patch>
# builds the same main packages.
set -euo pipefail

KUBERNETES_VERSION="${FEDWARDEN_KUBERNETES_VERSION:-v1.37.2}"
ETCD_VERSION="${FEDWARDEN_ETCD_VERSION:-v3.7.3}"
# The Go toolchain: go 1.26.x builds Kubernetes 1.34-1.37 and etcd 3.6/3.7. If a release ever
# needs a newer Go, set it here (the go command then fetches that toolchain from the proxy).
export GOTOOLCHAIN="${FEDWARDEN_GOTOOLCHAIN:-local}"
# -buildvcs=false: the throwaway module is not in a repository (and the caller's GOFLAGS may say
# otherwise); -mod=mod lets `go build` fill in go.sum.
export GOFLAGS="-buildvcs=false -mod=mod"
export CGO_ENABLED=0

DIR="${FEDWARDEN_CONTROL_PLANE_DIR:-$HOME/.cache/fedwarden/control-plane/${KUBERNETES_VERSION}-etcd${ETCD_VERSION}}"
BIN="$DIR/bin"

if [[ "${1:-}" == "--print-dir" ]]; then
    echo "$DIR"
    exit 0
fi

log() { printf '[control-plane] %s\n' "$*" >&2; }

now() { date +%s; }

version_of() {
    # The first line of the binary's version output; fails if it is missing or does not run
    # (a build cut short leaves no file: binaries are moved into place once linked).
    local b="$1" out
    [[ -x "$BIN/$b" ]] || return 1
    case "$b" in
        kubectl) out="$("$BIN/$b" version --client 2>&1)" || return 1 ;;
        *) out="$("$BIN/$b" --version 2>&1)" || return 1 ;;
    esac
    printf '%s\n' "${out%%$'\n'*}"
}

check() {
    # Every binary present and answering --version; prints the versions.
    local ok=0 b v
    for b in etcd kube-apiserver kube-controller-manager kubectl; do
        if v="$(version_of "$b")"; then
            log "$b: $v"
        else
            ok=1
        fi
    done
    return "$ok"
}

if check; then
    log "binaries present in $BIN; nothing to build"
    exit 0
fi

command -v go >/dev/null || { log "go is not on PATH (needs go >= 1.26)"; exit 1; }
log "go: $(go version)"
mkdir -p "$BIN"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedwarden-control-plane.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
total_start="$(now)"

build_etcd() {
    local start mod="$WORK/etcd"
    start="$(now)"
    mkdir -p "$mod"
    (
        cd "$mod"
        go mod init fedwarden.local/etcd-build >/dev/null 2>&1
        # The etcd main package is the root of go.etcd.io/etcd/server/v3 (server/main.go calls
        # etcdmain.Main). Its sibling modules must be at the same version (upstream replaces them
        # by relative paths).
        go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
            "go.etcd.io/etcd/api/v3@$ETCD_VERSION" \
            "go.etcd.io/etcd/client/pkg/v3@$ETCD_VERSION" \
            "go.etcd.io/etcd/client/v3@$ETCD_VERSION" \
            "go.etcd.io/etcd/pkg/v3@$ETCD_VERSION"
        go build -trimpath -ldflags "-s -w" -o "$WORK/etcd.bin" go.etcd.io/etcd/server/v3
        mv -f "$WORK/etcd.bin" "$BIN/etcd"
    )
    log "etcd $ETCD_VERSION built in $(($(now) - start)) s"
}

build_kubernetes() {
    local start mod="$WORK/kubernetes" kmod minor staging
    start="$(now)"
    mkdir -p "$mod"
    cd "$mod"
    go mod init fedwarden.local/kubernetes-build >/dev/null 2>&1
    go mod download "k8s.io/kubernetes@$KUBERNETES_VERSION"
    kmod="$(go list -m -f '{{.Dir}}' "k8s.io/kubernetes@$KUBERNETES_VERSION" 2>/dev/null || true)"
    [[ -n "$kmod" ]] || kmod="$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBERNETES_VERSION"
    minor="${KUBERNETES_VERSION#v1.}"
    minor="${minor%%.*}"
    # Staging modules: the ones upstream requires at v0.0.0 and replaces by ./staging/src/...
    # Their published tags are v0.<minor>.<patch> of the same release. Only those in the require
    # block matter (sample-controller and sample-cli-plugin are replaced but not required, and
    # the proxy does not serve them).
    staging="$(sed -n '/^require (/,/^)/p' "$kmod/go.mod" | awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}')"
    {
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo "replace ("
        for m in $staging; do
            echo "	$m => $m v0.${KUBERNETES_VERSION#v1.}"
        done
        echo ")"
    } >>go.mod
    log "kubernetes $KUBERNETES_VERSION: $(wc -w <<<"$staging") staging modules replaced by v0.${KUBERNETES_VERSION#v1.}"
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kubectl@$KUBERNETES_VERSION"
    log "kubernetes modules resolved in $(($(now) - start)) s"
    local x="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    x+=" -X k8s.io/component-base/version.gitMajor=1"
    x+=" -X k8s.io/component-base/version.gitMinor=$minor"
    x+=" -X k8s.io/component-base/version.gitTreeState=clean"
    x+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
    x+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
    x+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    for b in kube-apiserver kube-controller-manager kubectl; do
        local s
        s="$(now)"
        go build -trimpath -ldflags "-s -w $x" -o "$WORK/$b.bin" "k8s.io/kubernetes/cmd/$b"
        mv -f "$WORK/$b.bin" "$BIN/$b"
        log "$b built in $(($(now) - s)) s"
    done
    cd - >/dev/null
}

version_of etcd >/dev/null || build_etcd
for b in kube-apiserver kube-controller-manager kubectl; do
    if ! version_of "$b" >/dev/null; then
        build_kubernetes
        break
    fi
done
log "built in $(($(now) - total_start)) s total"
check || { log "a binary does not run --version"; exit 1; }
log "binaries in $BIN"
