#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, for the end-to-end tier (tests/e2e): the real
# kubelet runs the real images under containerd, Services resolve through CoreDNS, and
# NetworkPolicies are enforced.
#
# Usage: hack/node.sh up            start everything (builds and installs what is missing)
#        hack/node.sh down          stop everything it started and undo what it changed
#        hack/node.sh status        which parts run; exit 0 only when the node is Ready
#        hack/node.sh load IMAGE... copy podman images into the node's containerd
#        hack/node.sh restart-kubelet  stop the kubelet and start it again (a fault to survive)
#        hack/node.sh kubeconfig    print the admin kubeconfig's path
#
# What runs (each a host process, stopped by its PID on `down`):
#   etcd, kube-apiserver, kube-controller-manager, kubectl  hack/control-plane.sh's cache
#   kube-scheduler, kubelet, kube-proxy (nftables mode),
#   CoreDNS (a pod), kube-network-policies                    hack/node-build.sh's cache
#   containerd, runc, CNI plugins (bridge, host-local)        Debian packages (apt-get if missing)
#
# The network stays on the machine. Pods live on the bridge fwnode0 (10.244.0.0/24, gateway
# 10.244.0.1) with routes to the pod and Service CIDRs only: no default route, no masquerade.
# The nft table inet fedwarden-node-guard drops anything forwarded between the bridge and any
# other interface, and host traffic to the pod or Service CIDRs that would leave by another
# interface. The API server listens on the bridge's address only (pods reach it through the
# `kubernetes` Service, whose endpoint is that address); everything else on 127.0.0.1.
#
# Two fixes this kind of machine needs (see docs/testing.md): containerd must not set a negative
# oom_score_adj (root lacks CAP_SYS_RESOURCE; `restrict_oom_score_adj`), and the kernel has no
# nft `queue` expression, so kube-network-policies is built with
# hack/node/knp-xtables-nfqueue.patch.
#
# `down` restores the sysctls `up` saved (ip_forward, bridge-nf-call-*, and those the kubelet and
# kube-proxy change), deletes the nft tables of the guard, kube-proxy and kube-network-policies,
# the bridge, the kubepods cgroups, the mounts under the node's directories and the directories
# (and /var/log/containers, /var/lib/cni, /run/containerd, /run/secrets when `up` created them).
# Settings: FEDWARDEN_NODE_TIMEOUT (seconds `up` waits for each part, default 120).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

RUN=/var/lib/fedwarden-node       # state, configuration, logs, PIDs
STATE=/run/fedwarden-node         # sockets, containerd's and runc's state
PIDS="$RUN/pids"
LOGS="$RUN/logs"
PKI="$RUN/pki"
BRIDGE=fwnode0
POD_CIDR=10.244.0.0/24
GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/24
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
API="https://$GATEWAY:6443"
GUARD_TABLE=fedwarden-node-guard
PAUSE_IMAGE=localhost/fedwarden-node/pause:1
TIMEOUT="${FEDWARDEN_NODE_TIMEOUT:-120}"
# the sysctls this node (or the kubelet, kube-proxy, the bridge plugin) changes; `down` puts
# the values `up` saw back
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
    vm.overcommit_memory kernel.panic kernel.panic_on_oops net.netfilter.nf_conntrack_max
    net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait)
# directories outside $RUN and $STATE that the parts create; removed by `down` only when `up`
# created them (recorded in $RUN/created-dirs)
SHARED_DIRS=(/var/log/containers /var/log/pods /var/lib/cni /run/containerd /run/secrets
    /run/netns /opt/containerd)
# the order `down` stops things in: nothing recreates or reschedules pods while they are
# deleted, the kubelet stops them (CNI DEL removes their veths), then the rest
PARTS=(kube-controller-manager kube-scheduler kube-network-policies kube-proxy kubelet
    kube-apiserver etcd containerd)
PARTS_BUT_CONTAINERD=("${PARTS[@]:0:7}")

log() { printf '[node] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
now() { date +%s; }

CP_BIN="$(bash hack/control-plane.sh --print-dir)/bin"
NODE_BIN="$(bash hack/node-build.sh --print-dir)/bin"
KUBECTL=("$CP_BIN/kubectl" --kubeconfig "$RUN/admin.kubeconfig" --request-timeout=30s)
CTR=(ctr --address "$STATE/containerd.sock" --namespace k8s.io)

# wait_for WHAT CMD...: retry CMD each second until it succeeds or TIMEOUT passes
wait_for() {
    local what="$1" start
    shift
    start="$(now)"
    until "$@" >/dev/null 2>&1; do
        if (($(now) - start >= TIMEOUT)); then
            log "gave up waiting for $what after $TIMEOUT s"
            return 1
        fi
        sleep 1
    done
    log "$what after $(($(now) - start)) s"
}

# start NAME CMD...: in its own session (a ^C to the caller does not reach it), output to
# $LOGS/NAME.log, PID to $PIDS/NAME. In a non-interactive shell the background child is not a
# process group leader, so setsid runs CMD in the same process: $! is CMD's PID.
start() {
    local name="$1"
    shift
    setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$name"
}

# alive NAME: the PID in $PIDS/NAME still runs the program it was started as (a PID can be
# reused once the process is gone)
alive() {
    local name="$1" pid exe
    [[ -f "$PIDS/$name" ]] || return 1
    pid="$(cat "$PIDS/$name")"
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
    [[ "$(basename "$exe")" == "$(cat "$PIDS/$name.exe" 2>/dev/null)" ]]
}

# remember_exe NAME: the program the PID runs once it runs it (knp starts as unshare)
remember_exe() {
    basename "$2" >"$PIDS/$1.exe"
}

stop() {
    local name="$1" pid i
    if alive "$name"; then
        pid="$(cat "$PIDS/$name")"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 30); do
            alive "$name" || break
            sleep 1
        done
        if alive "$name"; then
            log "$name ($pid) did not stop on SIGTERM; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $name ($pid)"
    fi
    rm -f "$PIDS/$name" "$PIDS/$name.exe"
}

need_packages() {
    local missing=() p
    for p in containerd:containerd runc:runc nft:nftables iptables:iptables conntrack:conntrack \
        openssl:openssl patch:patch; do
        command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
    done
    [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt-get"
        timeout 300 apt-get update -qq
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

make_pki() {
    mkdir -p "$PKI"
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
        -subj "/CN=fedwarden-node-ca" 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # cert NAME SUBJECT [SUBJECT_ALT_NAMES]: a server-and-client certificate when given names
    cert() {
        local ext="extendedKeyUsage=clientAuth"
        [[ -n "${3:-}" ]] && ext="subjectAltName=$3"$'\n'"extendedKeyUsage=serverAuth,clientAuth"
        openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
        openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" \
            -days 30 -extfile <(printf '%s\n' "$ext") 2>/dev/null
        rm -f "$1.csr"
    }
    cert apiserver /CN=kube-apiserver "IP:$GATEWAY,IP:127.0.0.1,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert admin /O=system:masters/CN=fedwarden-node-admin
    cert kube-controller-manager /CN=system:kube-controller-manager
    cert kube-scheduler /CN=system:kube-scheduler
    cert kubelet /O=system:nodes/CN=system:node:localhost
    cert kube-proxy /CN=system:kube-proxy
    cert apiserver-kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client
    for name in admin kube-controller-manager kube-scheduler kubelet kube-proxy; do
        local k=("$CP_BIN/kubectl" --kubeconfig "$RUN/$name.kubeconfig" config)
        "${k[@]}" set-cluster node --server "$API" --certificate-authority ca.crt --embed-certs >/dev/null
        "${k[@]}" set-credentials "$name" --client-certificate "$name.crt" --client-key "$name.key" --embed-certs >/dev/null
        "${k[@]}" set-context node --cluster node --user "$name" >/dev/null
        "${k[@]}" use-context node >/dev/null
    done
    chmod 0600 "$RUN"/*.kubeconfig ./*.key
    cd "$REPO"
}

save_host_state() {
    local s d
    : >"$RUN/sysctls"
    for s in "${SYSCTLS[@]}"; do
        if v="$(sysctl -n "$s" 2>/dev/null)"; then printf '%s=%s\n' "$s" "$v" >>"$RUN/sysctls"; fi
    done
    : >"$RUN/created-dirs"
    for d in "${SHARED_DIRS[@]}"; do [[ -e "$d" ]] || echo "$d" >>"$RUN/created-dirs"; done
}

network_up() {
    ip link add "$BRIDGE" type bridge
    ip addr add "$GATEWAY/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # the host reaches Service IPs by the bridge, never by its default route, even before
    # kube-proxy has its rules in place
    ip route add "$SERVICE_CIDR" dev "$BRIDGE" src "$GATEWAY"
    nft -f - <<EOF
table inet $GUARD_TABLE {
    chain forward {
        type filter hook forward priority filter - 10; policy accept;
        iifname "$BRIDGE" oifname != "$BRIDGE" counter drop comment "pods: no way off the machine"
        oifname "$BRIDGE" iifname != "$BRIDGE" counter drop comment "nothing forwarded into pods"
    }
    chain output {
        type filter hook output priority filter - 10; policy accept;
        ip daddr { $POD_CIDR, $SERVICE_CIDR } oifname != { "$BRIDGE", "lo" } counter drop
    }
}
EOF
    sysctl -qw net.ipv4.ip_forward=1
    # bridged pod-to-pod packets through the ip hooks: kube-proxy's DNAT and the policy engine
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
    mkdir -p "$RUN/cni/net.d"
    cat >"$RUN/cni/net.d/10-fedwarden-node.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "fedwarden-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$RUN/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "10.244.0.10", "rangeEnd": "10.244.0.250"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}]
      }
    }
  ]
}
EOF
}

start_control_plane() {
    mkdir -p "$RUN/etcd"
    start etcd "$CP_BIN/etcd" --name node --data-dir "$RUN/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster node=http://127.0.0.1:2380 --log-level warn
    remember_exe etcd "$CP_BIN/etcd"
    wait_for etcd curl -sf http://127.0.0.1:2379/health
    # advertised on the bridge: the `kubernetes` Service's endpoint is an address pods reach
    start kube-apiserver "$CP_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
        --bind-address="$GATEWAY" --secure-port=6443 --advertise-address="$GATEWAY" \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --client-ca-file="$PKI/ca.crt" \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
        --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=Hostname --enable-admission-plugins=NodeRestriction
    remember_exe kube-apiserver "$CP_BIN/kube-apiserver"
    wait_for kube-apiserver "${KUBECTL[@]}" get --raw /readyz
    start kube-controller-manager "$CP_BIN/kube-controller-manager" \
        --kubeconfig="$RUN/kube-controller-manager.kubeconfig" \
        --authentication-kubeconfig="$RUN/kube-controller-manager.kubeconfig" \
        --authorization-kubeconfig="$RUN/kube-controller-manager.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
        --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
        --use-service-account-credentials=true \
        --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
        --controllers='*,-nodeipam'
    remember_exe kube-controller-manager "$CP_BIN/kube-controller-manager"
    start kube-scheduler "$NODE_BIN/kube-scheduler" --kubeconfig="$RUN/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig="$RUN/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig="$RUN/kube-scheduler.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false
    remember_exe kube-scheduler "$NODE_BIN/kube-scheduler"
}

start_containerd() {
    mkdir -p "$RUN/containerd" "$STATE"
    cat >"$RUN/containerd.toml" <<EOF
version = 2
root = "$RUN/containerd"
state = "$STATE/containerd"
[grpc]
  address = "$STATE/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_cdi = false
  # root here lacks CAP_SYS_RESOURCE: runc cannot set the negative oom_score_adj the kubelet
  # asks for, and every sandbox would fail
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
EOF
    start containerd "$(command -v containerd)" --config "$RUN/containerd.toml"
    remember_exe containerd "$(command -v containerd)"
    wait_for containerd "${CTR[@]}" version
}

# image REF ENTRYPOINT BINARY: a one-file image from a static binary, imported into containerd
import_binary_image() {
    local ref="$1" entrypoint="$2" binary="$3" tar
    tar="$(mktemp "${TMPDIR:-/tmp}/fedwarden-node-image.XXXXXX")"
    python3 hack/node/mkimage.py "$tar" "$ref" "[\"$entrypoint\"]" "$binary=$entrypoint"
    "${CTR[@]}" images import "$tar" >/dev/null
    rm -f "$tar"
}

start_kubelet() {
    mkdir -p "$RUN/kubelet/root" "$RUN/kubelet/pki" "$RUN/kubelet/volume-plugins" "$RUN/pod-logs"
    # no host name servers in pods: ClusterFirst pods ask CoreDNS only
    : >"$RUN/kubelet/resolv.conf"
    cat >"$RUN/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# this machine mounts cgroup v1 controllers; kubelet 1.37 refuses v1 unless told
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$STATE/containerd.sock
address: 127.0.0.1
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: $RUN/kubelet/resolv.conf
podLogsDir: $RUN/pod-logs
volumePluginDir: $RUN/kubelet/volume-plugins
failSwapOn: false
enforceNodeAllocatable: []
# no image garbage collection: the images were imported by hand and cannot be pulled again
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {}
evictionPressureTransitionPeriod: 10s
serializeImagePulls: false
localStorageCapacityIsolation: false
makeIPTablesUtilChains: false
EOF
    start kubelet "$NODE_BIN/kubelet" --config="$RUN/kubelet/config.yaml" \
        --kubeconfig="$RUN/kubelet.kubeconfig" --hostname-override=localhost \
        --root-dir="$RUN/kubelet/root" --cert-dir="$RUN/kubelet/pki" --v=1
    remember_exe kubelet "$NODE_BIN/kubelet"
    wait_for "node Ready" "${KUBECTL[@]}" wait --for=condition=Ready node/localhost --timeout=1s
}

start_kube_proxy() {
    cat >"$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $RUN/kube-proxy.kubeconfig}
hostnameOverride: localhost
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Services on the bridge only: no NodePorts on the machine's other interfaces
nodePortAddresses: [$GATEWAY/32]
# leave the machine's conntrack settings alone
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
    start kube-proxy "$NODE_BIN/kube-proxy" --config="$RUN/kube-proxy.yaml" --v=1
    remember_exe kube-proxy "$NODE_BIN/kube-proxy"
    wait_for kube-proxy curl -sf http://127.0.0.1:10256/healthz
}

start_addons() {
    local coredns_image token
    coredns_image="localhost/fedwarden-node/coredns:$("$NODE_BIN/coredns" -version | awk -F- '/CoreDNS/{print $2; exit}')"
    import_binary_image "$PAUSE_IMAGE" /pause "$NODE_BIN/pause"
    import_binary_image "$coredns_image" /coredns "$NODE_BIN/coredns"
    sed -e "s|@DNS_IP@|$DNS_IP|" -e "s|@COREDNS_IMAGE@|$coredns_image|" hack/node/addons.yaml |
        "${KUBECTL[@]}" apply -f - >/dev/null
    # kube-network-policies reads only an in-cluster configuration: a token and the CA where a
    # pod has them, bind-mounted in a mount namespace of its own
    mkdir -p "$RUN/knp-serviceaccount" /run/secrets/kubernetes.io/serviceaccount
    token="$("${KUBECTL[@]}" -n kube-system create token kube-network-policies --duration=48h)"
    printf '%s' "$token" >"$RUN/knp-serviceaccount/token"
    cp "$PKI/ca.crt" "$RUN/knp-serviceaccount/ca.crt"
    echo kube-system >"$RUN/knp-serviceaccount/namespace"
    start kube-network-policies unshare --mount --propagation private sh -c \
        "mount --bind '$RUN/knp-serviceaccount' /run/secrets/kubernetes.io/serviceaccount &&
         exec env KUBERNETES_SERVICE_HOST=$GATEWAY KUBERNETES_SERVICE_PORT=6443 \
         '$NODE_BIN/kube-network-policies' --hostname-override=localhost --disable-nri \
         --metrics-bind-address=127.0.0.1:9080 --nfqueue-id=100 --v=1"
    remember_exe kube-network-policies "$NODE_BIN/kube-network-policies"
    wait_for kube-network-policies curl -sf http://127.0.0.1:9080/metrics
    # the pod, not the Deployment: one replica is "Available" with none ready (maxUnavailable)
    wait_for "CoreDNS Ready" "${KUBECTL[@]}" -n kube-system wait --for=condition=Ready pod \
        --selector=k8s-app=kube-dns --timeout=1s
}

up() {
    [[ "$(id -u)" == 0 ]] || die "run as root: the node runs containers and changes the network"
    if [[ -d "$PIDS" ]]; then
        if status >/dev/null 2>&1; then
            log "already up (hack/node.sh down stops it)"
            return
        fi
        log "a previous node was left half up; taking it down first"
        down
    fi
    local start_time
    start_time="$(now)"
    need_packages
    bash hack/control-plane.sh
    bash hack/node-build.sh
    mkdir -p "$PIDS" "$LOGS"
    save_host_state
    make_pki
    network_up
    start_control_plane
    start_containerd
    # the pause image before the kubelet: its first pod sandbox needs it
    import_binary_image "$PAUSE_IMAGE" /pause "$NODE_BIN/pause"
    start_kubelet
    start_kube_proxy
    start_addons
    log "up in $(($(now) - start_time)) s: export KUBECONFIG=$RUN/admin.kubeconfig"
}

delete_pods() {
    # the kubelet stops the containers and tears down each sandbox's network
    "${KUBECTL[@]}" delete pods --all --all-namespaces --grace-period=0 --force --wait=false \
        >/dev/null 2>&1 || return 0
    local start
    start="$(now)"
    while (($(now) - start < 60)); do
        [[ -z "$("${CTR[@]}" tasks ls -q 2>/dev/null)" ]] && return 0
        sleep 1
    done
    log "containers still running after 60 s; killing them"
}

kill_leftover_tasks() {
    # what the kubelet did not stop
    local id
    alive containerd || return 0
    for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
        "${CTR[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
        "${CTR[@]}" tasks rm -f "$id" >/dev/null 2>&1 || true
    done
}

kill_leftover_shims() {
    # shims outlive containerd; this node's are those with its socket in their command line
    local pid
    for pid in $({ grep -l --null-data -- "$STATE/containerd.sock" /proc/[0-9]*/cmdline 2>/dev/null ||
        true; } | cut -d/ -f3); do
        [[ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" == containerd-shim* ]] &&
            kill -KILL "$pid" 2>/dev/null || true
    done
}

unmount_under() {
    local dir="$1" m
    # deepest first (no match is no error)
    findmnt -rn -o TARGET | { grep -E "^$dir(/|$)" || true; } | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
    done
}

remove_cgroups() {
    local c
    for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
        [[ -d "$c" ]] || continue
        find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || log "could not remove $c"
    done
}

down() {
    local part t ns
    if [[ -f "$PIDS/kube-apiserver" ]] && alive kube-apiserver; then
        stop kube-controller-manager
        stop kube-scheduler
        alive kubelet && delete_pods
    fi
    for part in "${PARTS_BUT_CONTAINERD[@]}"; do stop "$part"; done
    kill_leftover_tasks
    stop containerd
    kill_leftover_shims
    if [[ -x "$NODE_BIN/kube-proxy" ]]; then "$NODE_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
    for t in "inet $GUARD_TABLE" "inet kube-network-policies" "ip kube-proxy" "ip6 kube-proxy"; do
        nft list table $t >/dev/null 2>&1 && nft delete table $t
    done
    for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns delete "$ns"; done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
    unmount_under "$RUN"
    unmount_under "$STATE"
    unmount_under /run/containerd
    remove_cgroups
    if [[ -f "$RUN/sysctls" ]]; then
        sysctl -q -p "$RUN/sysctls" >/dev/null || log "some sysctls could not be restored"
    fi
    if [[ -f "$RUN/created-dirs" ]]; then
        while read -r d; do rm -rf "$d"; done <"$RUN/created-dirs"
    fi
    rm -rf "$RUN" "$STATE"
    log "down"
}

status() {
    local part rc=0
    for part in "${PARTS[@]}"; do
        if alive "$part"; then
            log "$part: running ($(cat "$PIDS/$part"))"
        else
            log "$part: not running"
            rc=1
        fi
    done
    if ((rc == 0)); then
        "${KUBECTL[@]}" get nodes -o wide >&2 || rc=1
        "${KUBECTL[@]}" wait --for=condition=Ready node/localhost --timeout=5s >/dev/null || rc=1
    fi
    return "$rc"
}

load() {
    local ref
    LOAD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/fedwarden-node-load.XXXXXX")"
    for ref in "$@"; do
        timeout 600 podman save --quiet --format docker-archive -o "$LOAD_DIR/image.tar" "$ref" >/dev/null
        timeout 600 "${CTR[@]}" images import "$LOAD_DIR/image.tar" >/dev/null
        rm -f "$LOAD_DIR/image.tar"
        log "loaded $ref"
    done
}

# a failed `up` shows the logs' last lines and takes the node down again (unless
# FEDWARDEN_NODE_KEEP is set, to look at it); `load` removes its temporary directory
ACTION="${1:-}"
LOAD_DIR=
on_exit() {
    local rc=$? f
    [[ -z "$LOAD_DIR" ]] || rm -rf "$LOAD_DIR"
    if ((rc)); then log "$ACTION failed (exit $rc)"; fi
    if ((rc)) && [[ "$ACTION" == up ]]; then
        for f in "$LOGS"/*.log; do
            [[ -f "$f" ]] || continue
            log "--- last lines of $f"
            tail -n 15 "$f" >&2
        done
        if [[ -z "${FEDWARDEN_NODE_KEEP:-}" ]]; then
            log "up failed; taking the node down"
            down
        fi
    fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

case "$ACTION" in
    up) up ;;
    down) down ;;
    status) status ;;
    load) shift; (($#)) || die "load: which images?"; load "$@" ;;
    kubeconfig) echo "$RUN/admin.kubeconfig" ;;
    restart-kubelet)
        alive kubelet || die "the kubelet is not running"
        stop kubelet
        start_kubelet
        ;;
    *) die "usage: hack/node.sh up|down|status|load IMAGE...|kubeconfig|restart-kubelet" ;;
esac
