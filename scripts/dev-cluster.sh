#!/usr/bin/env bash
# A local Kubernetes for Kiln's cluster path, built from Debian's own `kubernetes` source package (no distribution
# can be downloaded here).
#   scripts/dev-cluster.sh build    # the binaries, once per machine, into the cache (about 10 min on 2 cores)
#   scripts/dev-cluster.sh up       # build if needed, start etcd and the control plane on loopback (RBAC on);
#                                   # prints the cluster's kubeconfig (cluster-admin) as its last line
#   scripts/dev-cluster.sh status   # exit 0 while the API server answers
#   scripts/dev-cluster.sh down     # stop everything `up` started
# The binaries are Kubernetes 1.20.2 (bookworm's package) built with Debian's Go; one vendored module is swapped for
# Debian's newer copy (reflect2 1.0.1 crashes on Go 1.18 and later). Nothing is kept but the binaries.
set -euo pipefail

VERSION=1.20.2
CACHE=${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}
HOME_K8S=$CACHE/kubernetes/v$VERSION
BIN=$HOME_K8S/bin
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
BUILD_PACKAGES=(golang-go golang-github-modern-go-reflect2-dev dpkg-dev)
RUN_PACKAGES=(etcd-server)
STATE=${KILN_DEV_CLUSTER:-$CACHE/dev-cluster}
API_PORT=${KILN_DEV_CLUSTER_PORT:-16443}
ETCD_PORT=$((API_PORT + 1))
ETCD_PEER_PORT=$((API_PORT + 2))
SERVICE_RANGE=10.96.0.0/24
SERVICE_API_IP=10.96.0.1
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)  # in start order

say() { echo "… $*" >&2; }

# Debian packages the host lacks, installed without starting any service they bring.
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg"); done
  [ ${#missing[@]} = 0 ] && return
  [ "$(id -u)" = 0 ] || { echo "error: missing Debian packages: ${missing[*]} (sudo apt-get install them)" >&2; exit 2; }
  say "installing Debian's ${missing[*]}"
  mkdir -p "$CACHE/kubernetes"
  local policy=/usr/sbin/policy-rc.d ours="" status=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1; fi
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    >"$CACHE/kubernetes/install.log" 2>&1 || status=$?
  [ -z "$ours" ] || rm -f "$policy"
  [ "$status" = 0 ] || { echo "error: apt-get install failed; log: $CACHE/kubernetes/install.log" >&2; exit 2; }
}

# The Debian mirror apt is configured with (its deb822 sources or sources.list).
mirror() {
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# bookworm's kubernetes source package, through an apt configuration of its own (the host's is not changed).
fetch_source() {  # fetch_source DIR
  local dir=$1 apt=$1/apt
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/sources.d"
  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$(mirror)" >"$apt/sources.d/bookworm-src.sources"
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
  ensure_packages "${BUILD_PACKAGES[@]}"
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

# The cluster's CA, the API server's serving certificate, the service-account key pair and one token per identity.
pki() {
  local d=$STATE/pki
  [ -f "$d/tokens.csv" ] && return
  mkdir -p "$d" && chmod 700 "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kiln-dev-cluster-ca" -keyout "$d/ca.key" \
    -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$d/apiserver.key" -out "$d/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
    "$SERVICE_API_IP" >"$d/apiserver.ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 3650 \
    -extfile "$d/apiserver.ext" -out "$d/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  local tokens=$d/tokens.csv.partial
  : >"$tokens"
  printf '%s,kiln-admin,kiln-admin,"system:masters"\n' "$(openssl rand -hex 16)" >>"$tokens"
  printf '%s,system:kube-controller-manager,system:kube-controller-manager\n' "$(openssl rand -hex 16)" >>"$tokens"
  printf '%s,system:kube-scheduler,system:kube-scheduler\n' "$(openssl rand -hex 16)" >>"$tokens"
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

up() {
  build >/dev/null
  ensure_packages "${RUN_PACKAGES[@]}"
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
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --token-auth-file "$pki/tokens.csv" --authorization-mode Node,RBAC --anonymous-auth=false \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --api-audiences https://kubernetes.default.svc \
    --service-cluster-ip-range "$SERVICE_RANGE" --allow-privileged=false \
    --kubelet-preferred-address-types InternalIP --profiling=false
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
  sleep 2
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || { echo "error: $c exited; log: $STATE/log/$c.log" >&2; down >/dev/null; exit 2; }; done
  echo "$STATE/admin.kubeconfig"
}

down() {
  local i c pid
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[$i]}
    [ -f "$STATE/run/$c.pid" ] || continue
    pid=$(cat "$STATE/run/$c.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$STATE/run/$c.pid"
  done
  echo "stopped"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  status) [ -f "$STATE/pki/tokens.csv" ] && api_ready ;;
  down) down ;;
  *) echo "usage: $0 build|up|status|down" >&2; exit 2 ;;
esac
