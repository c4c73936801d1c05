#!/usr/bin/env bash
# A local Kubernetes for Kiln's cluster path, built from Debian's own `kubernetes` source package (no distribution
# can be downloaded here).
#   scripts/dev-cluster.sh build    # the binaries, once per machine, into the cache (about 10 min on 2 cores)
#   scripts/dev-cluster.sh up       # build if needed, start etcd and the control plane on loopback (RBAC on) and one
#                                   # node (containerd, kubelet) with Kiln's images imported, register KServe's and
#                                   # Istio's CRDs; prints the cluster's kubeconfig (cluster-admin) as its last line
#   scripts/dev-cluster.sh status   # exit 0 while the API server answers
#   scripts/dev-cluster.sh down     # stop everything `up` started
# Pods reach the host's own PostgreSQL and Redis (which listen on loopback only) at the bridge address, through relays
# the script starts (KILN_DEV_CLUSTER_RELAYS: the ports, default "5432 6379"); and one volume (a folder under the
# cluster's state, for a claim without a storage class: the chart's workspace) is there for the taking. Debian's
# Prometheus scrapes the pods that ask for it (port KILN_DEV_CLUSTER_PORT + 6, on loopback and the bridge address).
# The binaries are Kubernetes 1.20.2 (bookworm's package) built with Debian's Go; one vendored module is swapped for
# Debian's newer copy (reflect2 1.0.1 crashes on Go 1.18 and later). Nothing is kept but the binaries.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

VERSION=1.20.2
CACHE=${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}
HOME_K8S=$CACHE/kubernetes/v$VERSION
BIN=$HOME_K8S/bin
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
BUILD_PACKAGES=(golang-go golang-github-modern-go-reflect2-dev dpkg-dev)
RUN_PACKAGES=(etcd-server containerd runc containernetworking-plugins socat prometheus)
HERE=$(cd "$(dirname "$0")" && pwd)
NODE=kiln-dev
BRIDGE=kiln-dev0
POD_RANGE=10.244.0.0/24
BRIDGE_IP=10.244.0.1
PAUSE=kiln-pause:1
IMAGES=(kiln:0.1.0 kiln-edge:0.1.0)
STATE=${KILN_DEV_CLUSTER:-$CACHE/dev-cluster}
API_PORT=${KILN_DEV_CLUSTER_PORT:-16443}
ETCD_PORT=$((API_PORT + 1))
ETCD_PEER_PORT=$((API_PORT + 2))
KUBELET_PORT=$((API_PORT + 3))
PROMETHEUS_PORT=$((API_PORT + 6))  # +4 and +5: kube-proxy's health and metrics
SERVICE_RANGE=10.96.0.0/24
SERVICE_API_IP=10.96.0.1
RELAYS=(${KILN_DEV_CLUSTER_RELAYS-5432 6379})
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy pod-targets
            prometheus)  # start order

# bookworm's kubernetes source package, through an apt configuration of its own (the host's is not changed).
fetch_source() {  # fetch_source DIR
  local dir=$1 apt=$1/apt
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/sources.d"
  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$(debian_mirror)" >"$apt/sources.d/bookworm-src.sources"
  local opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/sources.d"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::Archives=$apt/archives" -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" update -q >"$dir/apt.log" 2>&1 || { echo "error: apt-get update (deb-src) failed; log: $dir/apt.log" >&2; exit 2; }
  (cd "$dir" && apt-get "${opts[@]}" source -q kubernetes >>"$dir/apt.log" 2>&1) \
    || { echo "error: apt-get source kubernetes failed; log: $dir/apt.log" >&2; exit 2; }
  # bookworm's is 1.20.5+really1.20.2 (the 1.20.2 tree): anything else is not what this script was made for.
  compgen -G "$dir/kubernetes_*$VERSION*.dsc" >/dev/null \
    || { echo "error: the source package is not Kubernetes $VERSION: $(ls "$dir"/*.dsc)" >&2; exit 2; }
}

build() {
  local have=1 b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || have=""; done
  if [ -n "$have" ]; then echo "$BIN"; return; fi
  apt_install "$HOME_K8S/install.log" "${BUILD_PACKAGES[@]}"
  local work=$HOME_K8S/build started
  started=$(date +%s)
  rm -rf "$work" && mkdir -p "$work"
  say "fetching Debian's kubernetes $VERSION source"
  fetch_source "$work"
  local src
  src=$(find "$work" -maxdepth 1 -type d -name "kubernetes-*" | head -1)
  [ -n "$src" ] || { echo "error: no source tree after apt-get source; log: $work/apt.log" >&2; exit 2; }
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"
  say "building ${BINARIES[*]} with $(go version | awk '{print $3}') (about 10 min on 2 cores)"
  # The tree's own build (GOPATH mode over its vendor folder, version stamped from these variables).
  (cd "$src" && GOCACHE="$work/gocache" KUBE_GIT_VERSION="v$VERSION" KUBE_GIT_TREE_STATE=clean GOFLAGS=-mod=vendor \
     make all WHAT="${BINARIES[*]/#/cmd/}") >"$work/build.log" 2>&1 \
    || { echo "error: building Kubernetes failed; the log ends:" >&2; tail -30 "$work/build.log" >&2; exit 2; }
  mkdir -p "$BIN.partial"
  for b in "${BINARIES[@]}"; do cp "$src/_output/local/bin/linux/amd64/$b" "$BIN.partial/"; done
  rm -rf "$BIN" && mv "$BIN.partial" "$BIN"
  rm -rf "$work"
  say "built in $(( $(date +%s) - started )) s: $(du -sh "$BIN" | cut -f1) in $BIN"
  echo "$BIN"
}

sign() {  # sign DIR NAME SUBJECT EXTENSIONS: a key and a certificate from the cluster's CA
  openssl req -newkey rsa:2048 -nodes -subj "$3" -keyout "$1/$2.key" -out "$1/$2.csr" 2>/dev/null
  printf "$4\n" >"$1/$2.ext"
  openssl x509 -req -in "$1/$2.csr" -CA "$1/ca.crt" -CAkey "$1/ca.key" -CAcreateserial -days 3650 -extfile "$1/$2.ext" \
    -out "$1/$2.crt" 2>/dev/null
}

# The cluster's CA, the API server's serving certificate, the service-account key pair and one token per identity.
pki() {
  local d=$STATE/pki
  [ -f "$d/tokens.csv" ] && return
  rm -rf "$STATE/etcd" && mkdir -p "$STATE/etcd"  # a new CA and keys make a new cluster: nothing of an old one stays
  mkdir -p "$d" && chmod 700 "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kiln-dev-cluster-ca" -keyout "$d/ca.key" \
    -out "$d/ca.crt" 2>/dev/null
  sign "$d" apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:$BRIDGE_IP,IP:$SERVICE_API_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth"
  sign "$d" kubelet "/CN=$NODE" "subjectAltName=IP:$BRIDGE_IP,DNS:$NODE\nextendedKeyUsage=serverAuth"
  # the API server's client certificate towards the kubelet (logs, exec), a cluster-admin
  sign "$d" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  local tokens=$d/tokens.csv.partial
  : >"$tokens"
  printf '%s,kiln-admin,kiln-admin,"system:masters"\n' "$(openssl rand -hex 16)" >>"$tokens"
  printf '%s,system:kube-controller-manager,system:kube-controller-manager\n' "$(openssl rand -hex 16)" >>"$tokens"
  printf '%s,system:kube-scheduler,system:kube-scheduler\n' "$(openssl rand -hex 16)" >>"$tokens"
  printf '%s,system:node:%s,system:node:%s,"system:nodes"\n' "$(openssl rand -hex 16)" "$NODE" "$NODE" >>"$tokens"
  printf '%s,system:kube-proxy,system:kube-proxy\n' "$(openssl rand -hex 16)" >>"$tokens"
  chmod 600 "$d"/*.key "$tokens"
  mv "$tokens" "$d/tokens.csv"
}

token_of() { awk -F, -v user="$1" '$2 == user {print $1}' "$STATE/pki/tokens.csv"; }

kubeconfig() {  # kubeconfig USER FILE
  cat >"$2" <<EOF_CONFIG
apiVersion: v1
kind: Config
clusters:
- name: kiln-dev
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $1
  user:
    token: $(token_of "$1")
contexts:
- name: kiln-dev
  context: {cluster: kiln-dev, user: $1}
current-context: kiln-dev
EOF_CONFIG
  chmod 600 "$2"
}

start() {  # start NAME COMMAND...: in its own session, logged, its pid kept
  local name=$1; shift
  if [ -f "$STATE/run/$name.pid" ] && kill -0 "$(cat "$STATE/run/$name.pid")" 2>/dev/null; then return; fi
  setsid "$@" >"$STATE/log/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/run/$name.pid"
}

alive() { [ -f "$STATE/run/$1.pid" ] && kill -0 "$(cat "$STATE/run/$1.pid")" 2>/dev/null; }

api_ready() {
  curl -sf --max-time 5 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(token_of kiln-admin)" \
    "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1
}

wait_until() {  # wait_until SECONDS COMPONENT CHECK...
  local seconds=$1 component=$2; shift 2
  for _ in $(seq 1 $((seconds * 2))); do
    "$@" && return
    alive "$component" || { echo "error: $component exited; its log ($STATE/log/$component.log) ends:" >&2
                            tail -20 "$STATE/log/$component.log" >&2; down >/dev/null; exit 2; }
    sleep 0.5
  done
  echo "error: $component did not answer within $seconds s; log: $STATE/log/$component.log" >&2
  down >/dev/null
  exit 2
}

etcd_ready() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" >/dev/null 2>&1; }

# The node's network: a bridge of its own for pods, with no route out (pods get a route to the bridge only).
bridge_up() {
  ip link show "$BRIDGE" >/dev/null 2>&1 && return
  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  touch "$STATE/run/bridge.created"
}

node_config() {
  mkdir -p "$STATE/cni" "$STATE/containerd" "$STATE/kubelet"
  cat >"$STATE/cni/10-kiln-dev.conflist" <<EOF_CNI
{"cniVersion": "0.4.0", "name": "kiln-dev", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_RANGE", "gateway": "$BRIDGE_IP"}]],
            "routes": [{"dst": "$SERVICE_RANGE", "gw": "$BRIDGE_IP"}], "dataDir": "$STATE/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF_CNI
  # restrict_oom_score_adj: no CAP_SYS_RESOURCE in this sandbox; without it runc cannot start a container.
  cat >"$STATE/containerd.toml" <<EOF_CONTAINERD
version = 2
root = "$STATE/containerd/root"
state = "/run/kiln-dev-containerd"
[grpc]
  address = "$STATE/run/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF_CONTAINERD
  cat >"$STATE/kubelet.yaml" <<EOF_KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $BRIDGE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
tlsCertFile: $STATE/pki/kubelet.crt
tlsPrivateKeyFile: $STATE/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
makeIPTablesUtilChains: false
failSwapOn: false
resolvConf: ""
serializeImagePulls: false
evictionHard: {memory.available: 200Mi, nodefs.available: 5%, imagefs.available: 5%}
EOF_KUBELET
  kubeconfig "system:node:$NODE" "$STATE/kubelet.kubeconfig"
}

ctr_() { ctr --address "$STATE/run/containerd.sock" --namespace k8s.io "$@"; }

# Kiln's images (and the sandbox image, made from the same base) from the Docker engine into the node, each only when
# the engine's copy changed since the last import. Run inside `docker-engine.sh run`.
import_images() {
  "$HERE/images.sh" >&2
  printf 'FROM kiln-base:bookworm\nCMD ["sleep", "infinity"]\n' \
    | DOCKER_BUILDKIT=0 docker build -q -t "$PAUSE" - >/dev/null 2>"$STATE/log/pause-image.log" \
    || { echo "error: building $PAUSE failed; log: $STATE/log/pause-image.log" >&2; exit 2; }
  local image id
  for image in "$PAUSE" "${IMAGES[@]}"; do
    id=$(docker image inspect -f '{{.Id}}' "$image")
    [ "$(cat "$STATE/run/imported-${image//[:\/]/_}" 2>/dev/null)" = "$id" ] && continue
    say "importing $image into the node"
    docker save "$image" | ctr_ images import - >/dev/null
    echo "$id" >"$STATE/run/imported-${image//[:\/]/_}"
  done
}

node_ready() {
  curl -sf --max-time 5 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(token_of kiln-admin)" \
    "https://127.0.0.1:$API_PORT/api/v1/nodes/$NODE" 2>/dev/null | python3 -c '
import json, sys
node = json.load(sys.stdin)
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]) else 1)' 2>/dev/null
}

SYSCTLS=(net/ipv4/ip_forward net/ipv4/conf/all/route_localnet)  # what the node's Services change while it runs
host_network() {
  local k
  for k in "${SYSCTLS[@]}"; do echo "$k=$(cat "/proc/sys/$k")"; done
  iptables-save 2>/dev/null | { grep -v '^#' || true; } | sed 's/\[[0-9:]*\]//'  # no rule at all: no line
}

node_up() {
  # What the host's network is before the node starts: nothing of it may change while the cluster runs.
  [ -f "$STATE/run/host.before" ] || host_network >"$STATE/run/host.before"
  [ -f "$STATE/run/netns.before" ] || ip netns list 2>/dev/null | awk '{print $1}' >"$STATE/run/netns.before"
  bridge_up
  node_config
  start containerd containerd --config "$STATE/containerd.toml"
  wait_until 30 containerd ctr_ version
  "$HERE/docker-engine.sh" run "$0" import-images
  start kubelet "$BIN/kubelet" --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
    --container-runtime remote --container-runtime-endpoint "unix://$STATE/run/containerd.sock" \
    --root-dir "$STATE/kubelet" --hostname-override "$NODE" --node-ip "$BRIDGE_IP" --cert-dir "$STATE/pki"
  wait_until 120 kubelet node_ready
  local after
  after=$(host_network)
  alive kube-proxy || [ "$after" = "$(cat "$STATE/run/host.before")" ] || {
    echo "error: the node changed the host's forwarding or firewall rules; stopping the cluster" >&2
    diff "$STATE/run/host.before" - <<<"$after" >&2 || true
    down >/dev/null; exit 2; }
  # Services: kube-proxy's iptables rules turn a service address into a pod's on the bridge, which the host then
  # forwards from one bridge port to another: forwarding is on while the cluster runs, and two rules of the script's
  # own keep it to the bridge (nothing from a pod leaves through another interface, nothing comes in to one). Down
  # removes kube-proxy's rules (--cleanup) and the script's, and puts the switches back as they were.
  guard_forwarding
  echo 1 >/proc/sys/net/ipv4/ip_forward
  kubeconfig system:kube-proxy "$STATE/kube-proxy.kubeconfig"
  start kube-proxy "$BIN/kube-proxy" --kubeconfig "$STATE/kube-proxy.kubeconfig" --proxy-mode iptables \
    --bind-address "$BRIDGE_IP" --hostname-override "$NODE" --cluster-cidr "$POD_RANGE" \
    --healthz-bind-address "127.0.0.1:$((API_PORT + 4))" --metrics-bind-address "127.0.0.1:$((API_PORT + 5))" \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0
  wait_until 30 kube-proxy curl -sf --max-time 2 "http://127.0.0.1:$((API_PORT + 4))/healthz" -o /dev/null
  guard_forwarding  # again, above the rules kube-proxy put first
  prometheus_up
  local port
  # The API server and Prometheus listen on loopback; pods reach them at the bridge address through relays of their
  # own (the API as the `kubernetes` Service, whose endpoint is the advertised bridge address).
  for port in "$API_PORT" "$PROMETHEUS_PORT" "${RELAYS[@]}"; do
    # only for a service that listens: a relay to nothing would turn "refused" into "reset" for the pod
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { say "nothing listens on 127.0.0.1:$port: no relay"; continue; }
    start "relay-$port" socat "TCP-LISTEN:$port,bind=$BRIDGE_IP,reuseaddr,fork" "TCP:127.0.0.1:$port"
  done
  workspace_volume
}

# A persistent volume without a storage class (what a claim without one binds to): a folder of the cluster's state,
# owned by the chart's user. Kept across down and up, like a disk; `rm -rf` of the state folder removes it.
workspace_volume() {
  local dir=$STATE/volumes/workspace
  mkdir -p "$dir" && chown 10001:10001 "$dir" && chmod 2770 "$dir"
  curl -s --max-time 10 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(token_of kiln-admin)" \
    -H "Content-Type: application/json" -X POST "https://127.0.0.1:$API_PORT/api/v1/persistentvolumes" -o /dev/null \
    -d "{\"apiVersion\": \"v1\", \"kind\": \"PersistentVolume\", \"metadata\": {\"name\": \"kiln-dev-workspace\"},
         \"spec\": {\"capacity\": {\"storage\": \"20Gi\"}, \"accessModes\": [\"ReadWriteOnce\", \"ReadWriteMany\"],
                  \"persistentVolumeReclaimPolicy\": \"Retain\", \"storageClassName\": \"\",
                  \"hostPath\": {\"path\": \"$dir\", \"type\": \"Directory\"}}}"
  # Released by a claim that is gone (its data kept): free for the next claim.
  if curl -sf --max-time 10 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(token_of kiln-admin)" \
       "https://127.0.0.1:$API_PORT/api/v1/persistentvolumes/kiln-dev-workspace" 2>/dev/null | grep -q '"phase": "Released"'; then
    curl -sf --max-time 10 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(token_of kiln-admin)" \
      -H "Content-Type: application/merge-patch+json" -X PATCH -d '{"spec": {"claimRef": null}}' -o /dev/null \
      "https://127.0.0.1:$API_PORT/api/v1/persistentvolumes/kiln-dev-workspace"
  fi
}

# KServe's InferenceService and ServingRuntime and Istio's VirtualService kinds (no KServe or Istio runs here), so
# `kiln endpoint deploy` can create an endpoint's objects and the chart its kiln-tvm runtime: generated by Kiln's own
# module from the KServe SDK, with the project's Python.
register_crds() {
  local python=$HERE/../.venv/bin/python
  if [ ! -x "$python" ]; then say "no $python (make setup): KServe's and Istio's CRDs not registered"; return; fi
  "$python" -m kiln.serving.crds --apply "$STATE/admin.kubeconfig" >"$STATE/log/crds.log" 2>&1 \
    || { echo "error: registering the CRDs failed; log: $STATE/log/crds.log" >&2; down >/dev/null; exit 2; }
}

# Debian's Prometheus on loopback, scraping every running pod annotated prometheus.io/scrape: "true" (port and path
# from its prometheus.io/port and /path annotations) with the labels the community's kubernetes-pods job gives: each
# pod label with `.` and `/` as `_` (kiln.dev/variant -> kiln_dev_variant), `namespace` and `pod`. Debian builds
# Prometheus without Kubernetes discovery, so a small process of the script's lists the pods from the API server every
# 2 s into a file Prometheus reads (file_sd). Scrapes every 2 s, keeps 1 day.
prometheus_up() {
  mkdir -p "$STATE/prometheus"
  cat >"$STATE/prometheus.yml" <<EOF_PROM
global: {scrape_interval: 2s, evaluation_interval: 15s}
scrape_configs:
  - job_name: kubernetes-pods
    file_sd_configs: [{files: [$STATE/prometheus/pods.json], refresh_interval: 2s}]
EOF_PROM
  cat >"$STATE/pod-targets.py" <<'EOF_PY'
import json, os, re, ssl, sys, time, urllib.request
api, token_file, ca, out = sys.argv[1:5]
token = open(token_file).read().strip()
context = ssl.create_default_context(cafile=ca)
while True:
    try:
        request = urllib.request.Request(f"{api}/api/v1/pods", headers={"Authorization": f"Bearer {token}"})
        pods = json.load(urllib.request.urlopen(request, context=context, timeout=10))["items"]
        targets = []
        for pod in pods:
            meta, notes = pod["metadata"], pod["metadata"].get("annotations") or {}
            ip = pod.get("status", {}).get("podIP")
            if notes.get("prometheus.io/scrape") != "true" or not ip or pod["status"].get("phase") != "Running":
                continue
            labels = {re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in (meta.get("labels") or {}).items()}
            labels.update(namespace=meta["namespace"], pod=meta["name"],
                          __metrics_path__=notes.get("prometheus.io/path", "/metrics"))
            targets.append({"targets": [f"{ip}:{notes.get('prometheus.io/port', '80')}"], "labels": labels})
        with open(out + ".tmp", "w") as f:
            json.dump(targets, f)
        os.replace(out + ".tmp", out)
    except (OSError, ValueError, KeyError) as exc:
        print(f"pod listing failed: {exc}", file=sys.stderr, flush=True)
    time.sleep(2)
EOF_PY
  echo "[]" >"$STATE/prometheus/pods.json"
  (umask 077 && token_of kiln-admin >"$STATE/pki/pod-targets.token")  # a file: no token in the process list
  start pod-targets python3 "$STATE/pod-targets.py" "https://127.0.0.1:$API_PORT" "$STATE/pki/pod-targets.token" \
    "$STATE/pki/ca.crt" "$STATE/prometheus/pods.json"
  start prometheus prometheus --config.file "$STATE/prometheus.yml" --storage.tsdb.path "$STATE/prometheus" \
    --storage.tsdb.retention.time 1d --web.listen-address "127.0.0.1:$PROMETHEUS_PORT"
  wait_until 60 prometheus curl -sf --max-time 2 "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" -o /dev/null
}

GUARD="kiln dev-cluster: pods stay on the bridge"
guard_forwarding() {
  local rule
  for rule in "-i $BRIDGE ! -o $BRIDGE" "! -i $BRIDGE -o $BRIDGE"; do
    # shellcheck disable=SC2086  # the rule's words
    while iptables -D FORWARD $rule -m comment --comment "$GUARD" -j DROP 2>/dev/null; do :; done
    # shellcheck disable=SC2086
    iptables -I FORWARD 1 $rule -m comment --comment "$GUARD" -j DROP
  done
}

up() {
  build >/dev/null
  apt_install "$STATE/install.log" "${RUN_PACKAGES[@]}"
  mkdir -p "$STATE/run" "$STATE/log" "$STATE/etcd"
  pki
  local pki=$STATE/pki
  say "starting etcd and the control plane on 127.0.0.1:$API_PORT"
  start etcd etcd --name kiln-dev --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "kiln-dev=http://127.0.0.1:$ETCD_PEER_PORT"
  wait_until 30 etcd etcd_ready
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address "$BRIDGE_IP" --secure-port "$API_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --token-auth-file "$pki/tokens.csv" --authorization-mode Node,RBAC --anonymous-auth=false \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --api-audiences https://kubernetes.default.svc \
    --service-cluster-ip-range "$SERVICE_RANGE" --allow-privileged=false \
    --kubelet-preferred-address-types InternalIP --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" --profiling=false
  wait_until 90 kube-apiserver api_ready
  kubeconfig kiln-admin "$STATE/admin.kubeconfig"
  kubeconfig system:kube-controller-manager "$STATE/controller-manager.kubeconfig"
  kubeconfig system:kube-scheduler "$STATE/scheduler.kubeconfig"
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --port 0 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --service-cluster-ip-range "$SERVICE_RANGE" --controllers '*,-nodeipam,-cloud-node-lifecycle' --profiling=false
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --port 0 --leader-elect=false --profiling=false
  say "starting the node: containerd and the kubelet, pods on $BRIDGE ($POD_RANGE)"
  node_up
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || { echo "error: $c exited; log: $STATE/log/$c.log" >&2; down >/dev/null; exit 2; }; done
  register_crds
  echo "$STATE/admin.kubeconfig"
}

api() {  # api METHOD PATH: the API server as cluster-admin
  curl -sf --max-time 10 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(token_of kiln-admin)" \
    -X "$1" "https://127.0.0.1:$API_PORT$2" >/dev/null 2>&1
}

# Every pod deleted through the API first, so the kubelet takes each down as a cluster would (networks released,
# volumes unmounted); whatever is left is taken down by hand below.
drain() {
  alive kube-apiserver && alive kubelet && [ -f "$STATE/pki/tokens.csv" ] || return 0
  local ns
  for ns in $(curl -sf --max-time 10 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(token_of kiln-admin)" \
                "https://127.0.0.1:$API_PORT/api/v1/namespaces" | python3 -c '
import json, sys
print(" ".join(n["metadata"]["name"] for n in json.load(sys.stdin)["items"]))' 2>/dev/null); do
    api DELETE "/api/v1/namespaces/$ns/pods?gracePeriodSeconds=0" || true
  done
  for _ in $(seq 1 60); do
    [ -z "$(ctr_ tasks ls -q 2>/dev/null)" ] && return
    sleep 0.5
  done
}

# What the node leaves on the host: containers' shims, mounts, network namespaces, the bridge.
node_cleanup() {
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $STATE/run/containerd.sock" 2>/dev/null || true
  local mnt
  awk -v a="$STATE/" -v b="/run/kiln-dev-containerd/" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/mounts \
    | sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
  for mnt in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do
    grep -qx "$mnt" "$STATE/run/netns.before" 2>/dev/null || ip netns delete "$mnt" 2>/dev/null || true
  done
  rm -f "$STATE/run/netns.before"
  if [ -f "$STATE/run/host.before" ]; then  # put back the switches and the firewall rules as they were
    host_network | cmp -s - "$STATE/run/host.before" || {
      local k
      for k in "${SYSCTLS[@]}"; do grep "^$k=" "$STATE/run/host.before" | cut -d= -f2 >"/proc/sys/$k"; done
      # A table the host had no rule in is not in the snapshot: restoring it empty flushes what the node added there.
      # (A host with no rule at all has a snapshot of switches only: grep finds nothing, which is no failure here.)
      { grep -v "^net/" "$STATE/run/host.before" || true
        iptables-save 2>/dev/null | grep '^\*' | grep -vxFf <(grep '^\*' "$STATE/run/host.before") \
          | sed 's/$/\nCOMMIT/' || true; } | iptables-restore; }
    rm -f "$STATE/run/host.before"
  fi
  rm -rf "$STATE/cni-ipam" /run/kiln-dev-containerd
  if [ -f "$STATE/run/bridge.created" ]; then
    ip link delete "$BRIDGE" 2>/dev/null || true
    rm -f "$STATE/run/bridge.created"
  fi
}

stop() {  # stop NAME: what start NAME started
  [ -f "$STATE/run/$1.pid" ] || return 0
  stop_pid "$(cat "$STATE/run/$1.pid")"
  rm -f "$STATE/run/$1.pid"
}

down() {
  local i relay
  drain
  for relay in "$STATE"/run/relay-*.pid; do [ -e "$relay" ] && stop "$(basename "$relay" .pid)"; done
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop "${COMPONENTS[$i]}"; done
  "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  node_cleanup
  echo "stopped"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  import-images) import_images ;;
  status) [ -f "$STATE/pki/tokens.csv" ] && api_ready || exit 1 ;;
  down) down ;;
  *) echo "usage: $0 build|up|status|down" >&2; exit 2 ;;
esac
