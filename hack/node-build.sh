#!/usr/bin/env bash
# Build the local node's own binaries from upstream Go modules (through the Go module proxy) and
# cache them, like hack/control-plane.sh does for etcd, kube-apiserver, kube-controller-manager
# and kubectl (which the node uses from there):
#
#   kubelet, kube-scheduler, kube-proxy   k8s.io/kubernetes, the control plane's throwaway-module
#                                         recipe (staging modules replaced by their published tags)
#   coredns                               github.com/coredns/coredns, with only the plugins the
#                                         node's Corefile uses (hack/node/coredns.go)
#   kube-network-policies                 sigs.k8s.io/kube-network-policies with
#                                         hack/node/knp-xtables-nfqueue.patch (this kernel has no
#                                         nft "queue" expression, only the xtables NFQUEUE target)
#   pause                                 hack/node/pause.go, static: the pod sandbox image
#
# Usage: hack/node-build.sh             build what is missing, then check the binaries run
#        hack/node-build.sh --print-dir print the directory the binaries go to (bin/ below it)
#
# Versions: FEDWARDEN_KUBERNETES_VERSION (the control plane's), FEDWARDEN_COREDNS_VERSION,
# FEDWARDEN_KNP_VERSION; the cache directory's name follows them. Builds run under `nice`: the
# machine's cores are shared.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION="${FEDWARDEN_KUBERNETES_VERSION:-v1.37.2}"
COREDNS_VERSION="${FEDWARDEN_COREDNS_VERSION:-v1.15.0}"
KNP_VERSION="${FEDWARDEN_KNP_VERSION:-v0.8.0}"
export GOTOOLCHAIN="${FEDWARDEN_GOTOOLCHAIN:-local}"
export GOFLAGS="-buildvcs=false -mod=mod"
export CGO_ENABLED=0

DIR="${FEDWARDEN_NODE_DIR:-$HOME/.cache/fedwarden/node/${KUBERNETES_VERSION}-coredns${COREDNS_VERSION}-knp${KNP_VERSION}}"
BIN="$DIR/bin"
HACK="$PWD/hack/node"

if [[ "${1:-}" == "--print-dir" ]]; then
    echo "$DIR"
    exit 0
fi

log() { printf '[node-build] %s\n' "$*" >&2; }
now() { date +%s; }

WORK=
CHILD=
cleanup() {
    if [[ -n "$CHILD" ]]; then kill "$CHILD" 2>/dev/null || true; fi
    if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# limit SECONDS CMD...: nice'd, stopped when it overruns; in the background so that a signal to
# this script is handled at once (bash runs traps only between foreground commands)
limit() {
    local seconds="$1" rc=0
    shift
    timeout --kill-after=30 "$seconds" nice -n 10 "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=
    return "$rc"
}

runs() {  # runs NAME: the binary is there and answers its version flag
    local b="$1"
    [[ -x "$BIN/$b" ]] || return 1
    case "$b" in
        pause) return 0 ;;  # no flags: it would sleep
        coredns) "$BIN/$b" -version >/dev/null 2>&1 ;;
        kube-network-policies) "$BIN/$b" --help >/dev/null 2>&1 ;;
        *) "$BIN/$b" --version >/dev/null 2>&1 ;;
    esac
}

build_kubernetes() {
    local mod="$WORK/kubernetes" kmod minor staging x b s
    mkdir -p "$mod"
    cd "$mod"
    go mod init fedwarden.local/node-build >/dev/null 2>&1
    limit 900 go mod download "k8s.io/kubernetes@$KUBERNETES_VERSION"
    kmod="$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBERNETES_VERSION"
    minor="${KUBERNETES_VERSION#v1.}"
    minor="${minor%%.*}"
    # the staging modules upstream requires at v0.0.0 and replaces by ./staging/src/...
    staging="$(sed -n '/^require (/,/^)/p' "$kmod/go.mod" | awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}')"
    {
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo "replace ("
        for m in $staging; do echo "	$m => $m v0.${KUBERNETES_VERSION#v1.}"; done
        echo ")"
    } >>go.mod
    limit 900 go get "k8s.io/kubernetes/cmd/kubelet@$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kube-scheduler@$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kube-proxy@$KUBERNETES_VERSION"
    x="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    x+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    x+=" -X k8s.io/component-base/version.gitTreeState=clean"
    x+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
    x+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    for b in kube-scheduler kube-proxy kubelet; do
        runs "$b" && continue
        s="$(now)"
        limit 3600 go build -trimpath -ldflags "-s -w $x" -o "$WORK/$b.bin" "k8s.io/kubernetes/cmd/$b"
        mv -f "$WORK/$b.bin" "$BIN/$b"
        log "$b $KUBERNETES_VERSION built in $(($(now) - s)) s"
    done
    cd - >/dev/null
}

build_coredns() {
    local mod="$WORK/coredns" s
    s="$(now)"
    mkdir -p "$mod"
    cp "$HACK/coredns.go" "$mod/main.go"
    cd "$mod"
    go mod init fedwarden.local/coredns-build >/dev/null 2>&1
    limit 900 go get "github.com/coredns/coredns@$COREDNS_VERSION"
    limit 900 go mod tidy
    limit 3600 go build -trimpath -ldflags "-s -w" -o "$WORK/coredns.bin" .
    mv -f "$WORK/coredns.bin" "$BIN/coredns"
    cd - >/dev/null
    log "coredns $COREDNS_VERSION built in $(($(now) - s)) s"
}

build_knp() {
    local src="$WORK/knp" s
    s="$(now)"
    limit 900 go mod download "sigs.k8s.io/kube-network-policies@$KNP_VERSION"
    cp -r "$(go env GOMODCACHE)/sigs.k8s.io/kube-network-policies@$KNP_VERSION" "$src"
    chmod -R u+w "$src"
    patch --quiet -d "$src" -p1 <"$HACK/knp-xtables-nfqueue.patch"
    (cd "$src" && limit 3600 go build -trimpath -ldflags "-s -w" -o "$WORK/knp.bin" ./cmd)
    mv -f "$WORK/knp.bin" "$BIN/kube-network-policies"
    log "kube-network-policies $KNP_VERSION (patched) built in $(($(now) - s)) s"
}

build_pause() {
    local mod="$WORK/pause"
    mkdir -p "$mod"
    cp "$HACK/pause.go" "$mod/main.go"
    (cd "$mod" && go mod init fedwarden.local/pause >/dev/null 2>&1 && limit 300 go build -trimpath -ldflags "-s -w" -o "$WORK/pause.bin" .)
    mv -f "$WORK/pause.bin" "$BIN/pause"
}

ALL=(pause kube-network-policies coredns kube-scheduler kube-proxy kubelet)
missing=()
for b in "${ALL[@]}"; do runs "$b" || missing+=("$b"); done
if ((${#missing[@]} == 0)); then
    log "binaries present in $BIN; nothing to build"
    exit 0
fi
command -v go >/dev/null || { log "go is not on PATH (needs go >= 1.26)"; exit 1; }
command -v patch >/dev/null || { log "patch is not installed (apt-get install patch)"; exit 1; }
log "building ${missing[*]} with $(go version)"
mkdir -p "$BIN"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedwarden-node-build.XXXXXX")"
start="$(now)"
runs pause || build_pause
runs kube-network-policies || build_knp
runs coredns || build_coredns
for b in kube-scheduler kube-proxy kubelet; do
    if ! runs "$b"; then build_kubernetes; break; fi
done
for b in "${ALL[@]}"; do runs "$b" || { log "$b does not run"; exit 1; }; done
log "built in $(($(now) - start)) s; binaries in $BIN"
