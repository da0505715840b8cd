#!/usr/bin/env bash
# fedwarden end to end on kind: create the cluster (kind-config.yaml), load the three images,
# install the chart, apply examples/, wait until the training Succeeds, print the status.
#
# Needs: kind, kubectl, helm (hack/helm.sh builds one), and Docker or podman with the images
# ghcr.io/fedwarden/{operator,aggregator,client}:<version> (hack/images.sh builds them with
# podman; `docker build -f images/<c>/Dockerfile .` after `pip wheel '.[all]' -w dist/wheels`
# works too: each image installs its role's extra from those wheels, so they must hold them all).
#
# Settings: KIND (default kind), KIND_CLUSTER (default fedwarden), KIND_NODE_IMAGE (default:
# kind's), KIND_EXPERIMENTAL_PROVIDER=podman to use podman, FEDWARDEN_KEEP_CLUSTER=1 to keep
# the cluster afterwards, TIMEOUT (seconds for the training, default 900).
set -euo pipefail
cd "$(dirname "$0")/.."

KIND="${KIND:-kind}"
CLUSTER="${KIND_CLUSTER:-fedwarden}"
PREFIX="${FEDWARDEN_IMAGE_PREFIX:-ghcr.io/fedwarden}"
TAG="${FEDWARDEN_IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)}"
HELM="${HELM:-$(command -v helm || bash hack/helm.sh --print-path)}"
TIMEOUT="${TIMEOUT:-900}"
NS=fl-demo
log() { printf '[e2e-kind] %s\n' "$*" >&2; }

for tool in "$KIND" kubectl "$HELM"; do
    command -v "$tool" >/dev/null || [[ -x "$tool" ]] || { log "$tool is missing"; exit 1; }
done
ENGINE=docker
[[ "${KIND_EXPERIMENTAL_PROVIDER:-}" == podman ]] && ENGINE=podman

if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "creating cluster $CLUSTER"
    "$KIND" create cluster --name "$CLUSTER" --config kind-config.yaml \
        ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 180s
fi
if [[ -z "${FEDWARDEN_KEEP_CLUSTER:-}" ]]; then
    trap '"$KIND" delete cluster --name "$CLUSTER"' EXIT
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "loading images $PREFIX/{operator,aggregator,client}:$TAG"
for c in operator aggregator client; do
    image="$PREFIX/$c:$TAG"
    if [[ "$ENGINE" == podman ]]; then
        # kind load docker-image needs a docker daemon; an archive works with either engine
        archive="$(mktemp --suffix=.tar)"
        podman save --format docker-archive -o "$archive" "$image"
        "$KIND" load image-archive "$archive" --name "$CLUSTER"
        rm -f "$archive"
    else
        "$KIND" load docker-image "$image" --name "$CLUSTER"
    fi
done

log "installing the chart"
"$HELM" upgrade --install fedwarden charts/fedwarden --namespace fedwarden-system \
    --create-namespace --set image.tag="$TAG" --set image.pullPolicy=Never --wait --timeout 5m
"$HELM" test fedwarden --namespace fedwarden-system --logs

log "applying examples/ in $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
# the examples' in-cluster clients and aggregator use the images just loaded
kubectl apply -n "$NS" -f examples/

log "waiting up to $TIMEOUT s for the training to finish"
deadline=$(( $(date +%s) + TIMEOUT ))
phase=""
while (( $(date +%s) < deadline )); do
    phase="$(kubectl get ft digits -n "$NS" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    [[ "$phase" == Succeeded || "$phase" == Failed ]] && break
    sleep 5
done
kubectl get ft,flc -n "$NS" -o wide
kubectl get events.events.k8s.io -n "$NS" --sort-by=.metadata.creationTimestamp | tail -n 30
kubectl get ft digits -n "$NS" -o jsonpath='{.status}' | python3 -m json.tool
if [[ "$phase" != Succeeded ]]; then
    log "the training did not succeed (phase: ${phase:-none})"
    kubectl logs -n fedwarden-system deploy/fedwarden --tail=100 || true
    kubectl logs -n "$NS" job/digits-aggregator --tail=100 || true
    exit 1
fi
log "the training Succeeded"
