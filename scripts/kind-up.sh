#!/usr/bin/env bash
# Creates the kind cluster of kind-config.yaml, installs Kiln's prerequisites (cert-manager, Istio with its
# Prometheus add-on, KServe, KubeRay, Kubeflow Pipelines), builds and loads the platform image, creates the Secrets,
# installs the chart with values-kind.yaml and applies manifests/overlays/kind. Needs Docker (8 GB of memory for it),
# kind, kubectl and helm. Safe to run again: every step skips or upgrades what is already there.
#   scripts/kind-up.sh            # everything
#   KILN_SKIP_BUILD=1 scripts/kind-up.sh   # the image is already loaded
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=kiln
NAMESPACE=kubeflow          # the chart lives beside KFP: pipeline steps mount its workspace volume
SERVING_NAMESPACE=kiln      # endpoints (InferenceServices, VirtualServices)
IMAGE=kiln:0.1.0
EDGE_IMAGE=kiln-edge:0.1.0

# Prerequisite versions (README: Cluster lists them with what each requests).
CERT_MANAGER_VERSION=v1.21.1
ISTIO_VERSION=1.31.1
KSERVE_VERSION=v0.21.0
KUBERAY_VERSION=1.7.0
KFP_VERSION=2.17.0

step() { printf '\n==> %s\n' "$*"; }
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not on PATH (README: Cluster lists what to install)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "error: Docker is not running" >&2; exit 1; }

step "kind cluster $CLUSTER (kind-config.yaml)"
if kind get clusters | grep -qx "$CLUSTER"; then echo "exists"; else kind create cluster --config kind-config.yaml; fi
kubectl config use-context "kind-$CLUSTER"

step "cert-manager $CERT_MANAGER_VERSION"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
kubectl -n cert-manager wait --for=condition=Available deployment --all --timeout=300s

step "Istio $ISTIO_VERSION (base + istiod, small requests) and its Prometheus add-on"
helm repo add istio https://istio-release.storage.googleapis.com/charts --force-update >/dev/null
helm upgrade --install istio-base istio/base -n istio-system --create-namespace --version "$ISTIO_VERSION" --wait
helm upgrade --install istiod istio/istiod -n istio-system --version "$ISTIO_VERSION" --wait \
  --set pilot.resources.requests.cpu=100m --set pilot.resources.requests.memory=512Mi
kubectl apply -f "https://raw.githubusercontent.com/istio/istio/$ISTIO_VERSION/samples/addons/prometheus.yaml"

step "KServe $KSERVE_VERSION (Kiln's InferenceServices ask for raw deployment mode: no Knative)"
kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
kubectl -n kserve wait --for=condition=Available deployment/kserve-controller-manager --timeout=300s
kubectl apply --server-side -f \
  "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"

step "KubeRay operator $KUBERAY_VERSION"
helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update >/dev/null
helm upgrade --install kuberay-operator kuberay/kuberay-operator -n kuberay-system --create-namespace \
  --version "$KUBERAY_VERSION" --wait

step "Kubeflow Pipelines $KFP_VERSION (standalone, platform-agnostic)"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
kubectl -n "$NAMESPACE" wait --for=condition=Available deployment --all --timeout=1200s
# The KFP UI on node port 30080, which kind-config.yaml maps to http://localhost:8080.
kubectl -n "$NAMESPACE" patch service ml-pipeline-ui --type=merge \
  -p '{"spec":{"type":"NodePort","ports":[{"name":"http","port":80,"targetPort":3000,"nodePort":30080}]}}'

if [ -z "${KILN_SKIP_BUILD:-}" ]; then
  step "images $IMAGE and $EDGE_IMAGE, loaded into the node"
  docker build -t "$IMAGE" .
  docker build -t "$EDGE_IMAGE" -f edge/Dockerfile edge
  kind load docker-image "$IMAGE" "$EDGE_IMAGE" --name "$CLUSTER"
fi

step "Secrets (random passwords, made here and kept only in the cluster)"
kubectl create namespace "$SERVING_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$SERVING_NAMESPACE" istio-injection=enabled --overwrite
secret() { kubectl get secret "$2" -n "$1" >/dev/null 2>&1 || kubectl create secret generic "$2" -n "$1" "${@:3}"; }
secret "$NAMESPACE" kiln-postgresql --from-literal=password="$(openssl rand -hex 24)"
secret "$NAMESPACE" kiln-object-store --from-literal=access-key-id=kiln \
  --from-literal=secret-access-key="$(openssl rand -hex 24)"
# KServe's storage initializer reads the same keys under its own names, with MinIO's address in annotations.
if ! kubectl get secret kiln-s3 -n "$SERVING_NAMESPACE" >/dev/null 2>&1; then
  key=$(kubectl get secret kiln-object-store -n "$NAMESPACE" -o jsonpath='{.data.secret-access-key}' | base64 -d)
  kubectl create secret generic kiln-s3 -n "$SERVING_NAMESPACE" \
    --from-literal=AWS_ACCESS_KEY_ID=kiln --from-literal=AWS_SECRET_ACCESS_KEY="$key"
  kubectl annotate secret kiln-s3 -n "$SERVING_NAMESPACE" \
    serving.kserve.io/s3-endpoint="kiln-minio.$NAMESPACE.svc.cluster.local:9000" \
    serving.kserve.io/s3-usehttps=0 serving.kserve.io/s3-region=us-east-1
fi

step "Kiln chart (charts/kiln, values-kind.yaml)"
helm upgrade --install kiln charts/kiln -n "$NAMESPACE" -f charts/kiln/values-kind.yaml --wait --timeout 15m
helm test kiln -n "$NAMESPACE"

step "per-model objects (manifests/overlays/kind)"
kubectl apply -k manifests/overlays/kind

step "done"
echo "KFP UI: http://localhost:8080  MLflow: http://localhost:5000  Evidently: http://localhost:8000"
echo "distribution point: http://localhost:8090/v1/health"
