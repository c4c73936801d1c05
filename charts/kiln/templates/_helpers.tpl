{{/* The chart name, or nameOverride. */}}
{{- define "kiln.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: fullnameOverride, the release name when it contains the chart name, else <release>-<chart>. */}}
{{- define "kiln.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "kiln.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "kiln.labels" -}}
helm.sh/chart: {{ include "kiln.chart" . }}
{{ include "kiln.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kiln
{{- end }}

{{/* Labels selecting the release's pods (add app.kubernetes.io/component for one service). */}}
{{- define "kiln.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kiln.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "mlflow"). */}}
{{- define "kiln.componentLabels" -}}
{{ include "kiln.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector of one component's pods: (dict "ctx" $ "component" "mlflow"). */}}
{{- define "kiln.componentSelector" -}}
{{ include "kiln.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* A component's object name: (dict "ctx" $ "component" "mlflow") -> kiln-mlflow. */}}
{{- define "kiln.componentName" -}}
{{- printf "%s-%s" (include "kiln.fullname" .ctx) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* How a pod reaches a component's Service: its name, or, on a cluster without DNS, the address the kubelet puts in
every pod's environment ($(NAME_SERVICE_HOST): for containers' env values and args only). */}}
{{- define "kiln.reach" -}}
{{- if .ctx.Values.clusterDNS }}{{ include "kiln.componentName" . }}
{{- else }}$({{ include "kiln.componentName" . | upper | replace "-" "_" }}_SERVICE_HOST){{ end }}
{{- end }}

{{/* In-cluster DNS name of a component's Service. */}}
{{- define "kiln.host" -}}
{{- printf "%s.%s.svc.cluster.local" (include "kiln.componentName" .) .ctx.Release.Namespace }}
{{- end }}

{{/* The platform image: repository@digest when a digest is given, else repository:tag. */}}
{{- define "kiln.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}
{{- end }}

{{/* The pod-level settings every pod shares: pull secrets, security context, scheduling. */}}
{{- define "kiln.podSettings" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* PostgreSQL's host and port, in-chart or external. */}}
{{- define "kiln.postgresHost" -}}
{{- if .Values.postgresql.enabled }}
{{- include "kiln.host" (dict "ctx" . "component" "postgresql") }}
{{- else }}
{{- required "postgresql.external.host is required when postgresql.enabled is false" .Values.postgresql.external.host }}
{{- end }}
{{- end }}

{{- define "kiln.postgresPort" -}}
{{- if .Values.postgresql.enabled }}5432{{ else }}{{ .Values.postgresql.external.port }}{{ end }}
{{- end }}

{{/* Redis host:port, in-chart or external. */}}
{{- define "kiln.redisAddress" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s:6379" (include "kiln.host" (dict "ctx" . "component" "redis")) }}
{{- else }}
{{- required "redis.external.address is required when redis.enabled is false" .Values.redis.external.address }}
{{- end }}
{{- end }}

{{/* The S3 API URL: the in-chart MinIO, or objectStore.endpoint. */}}
{{- define "kiln.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s:9000" (include "kiln.host" (dict "ctx" . "component" "minio")) }}
{{- else }}
{{- required "objectStore.endpoint is required when minio.enabled is false" .Values.objectStore.endpoint }}
{{- end }}
{{- end }}

{{/* Environment every Kiln container gets: the cluster profile, S3 and PostgreSQL credentials from Secrets. */}}
{{- define "kiln.env" -}}
- name: KILN_PROFILE
  value: cluster
- name: HOME
  value: /tmp
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ include "kiln.s3Endpoint" . | quote }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ include "kiln.s3Endpoint" . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.objectStore.region | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.objectStore.existingSecret }}
      key: access-key-id
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.objectStore.existingSecret }}
      key: secret-access-key
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgresql.existingSecret }}
      key: password
{{- if not .Values.clusterDNS }}
# No DNS: MLflow's address from the environment, over kiln.yaml's name.
- name: KILN_MLFLOW__TRACKING_URI
  value: http://{{ include "kiln.reach" (dict "ctx" . "component" "mlflow") }}:{{ .Values.mlflow.port }}
{{- end }}
{{- end }}

{{/* A Kiln container's security context and image lines. */}}
{{- define "kiln.container" -}}
image: {{ include "kiln.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/* The workspace volume and /tmp: (dict "ctx" $ "readOnly" true). */}}
{{- define "kiln.workspaceVolumes" -}}
- name: workspace
  persistentVolumeClaim:
    claimName: {{ include "kiln.componentName" (dict "ctx" .ctx "component" "workspace") }}
    {{- if .readOnly }}
    readOnly: true
    {{- end }}
- name: settings
  configMap:
    name: {{ include "kiln.componentName" (dict "ctx" .ctx "component" "settings") }}
- name: tmp
  emptyDir: {}
{{- end }}

{{/* Mounts matching kiln.workspaceVolumes: kiln.yaml from the ConfigMap over the workspace volume. */}}
{{- define "kiln.workspaceMounts" -}}
- name: workspace
  mountPath: /kiln/workspace
  {{- if .readOnly }}
  readOnly: true
  {{- end }}
- name: settings
  mountPath: /kiln/workspace/kiln.yaml
  subPath: kiln.yaml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* HTTP probes on a path and port: (dict "path" "/health" "port" "http"). */}}
{{- define "kiln.probes" -}}
{{- $get := dict "path" .path "port" (.port | default "http") }}
readinessProbe:
  httpGet:
    {{- toYaml $get | nindent 4 }}
  periodSeconds: 10
  failureThreshold: 3
livenessProbe:
  httpGet:
    {{- toYaml $get | nindent 4 }}
  periodSeconds: 20
  failureThreshold: 6
startupProbe:
  httpGet:
    {{- toYaml $get | nindent 4 }}
  periodSeconds: 5
  failureThreshold: {{ .startupFailures | default 60 }}
{{- end }}

{{/* A Service on one HTTP port, a NodePort when nodePort is set: (dict "ctx" $ "component" "mlflow" "port" 5000 "nodePort" 0). */}}
{{- define "kiln.httpService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "kiln.componentName" . }}
  labels:
    {{- include "kiln.componentLabels" . | nindent 4 }}
spec:
  type: {{ if .nodePort }}NodePort{{ else }}ClusterIP{{ end }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: http
      protocol: TCP
      appProtocol: http
      {{- with .nodePort }}
      nodePort: {{ . }}
      {{- end }}
  selector:
    {{- include "kiln.componentSelector" . | nindent 4 }}
{{- end }}

{{/* A ServiceAccount that mounts no API token: (dict "ctx" $ "component" "mlflow"). */}}
{{- define "kiln.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "kiln.componentName" . }}
  labels:
    {{- include "kiln.componentLabels" . | nindent 4 }}
automountServiceAccountToken: false
{{- end }}

{{/* The head of a one-replica Deployment of a Kiln server, up to its container list: (dict "ctx" $ "component" "mlflow"). */}}
{{- define "kiln.serverDeployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "kiln.componentName" . }}
  labels:
    {{- include "kiln.componentLabels" . | nindent 4 }}
spec:
  replicas: 1
  selector:
    matchLabels:
      {{- include "kiln.componentSelector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "kiln.componentLabels" . | nindent 8 }}
      annotations:
        # A changed kiln.yaml restarts the servers that read it.
        checksum/settings: {{ include (print .ctx.Template.BasePath "/settings-configmap.yaml") .ctx | sha256sum }}
    spec:
      {{- include "kiln.podSettings" .ctx | trim | nindent 6 }}
      serviceAccountName: {{ include "kiln.componentName" . }}
      automountServiceAccountToken: {{ .apiToken | default false }}
{{- end }}

{{/* What changing an endpoint takes in the endpoints' namespace (kiln.serving.cluster: apply is a server-side
patch; a settled rollout deletes its candidate's objects): the endpoint deployers' Role and Studio's. */}}
{{- define "kiln.endpointRules" -}}
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices", "trainedmodels"]
  verbs: ["get", "list", "patch", "delete"]
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "patch", "delete"]
{{- end }}

{{/* The CronJob schedule for an interval: 5m, 1h, 1d... (as kiln.monitoring.schedule.cron_expression computes it). */}}
{{- define "kiln.cron" -}}
{{- $every := toString . }}
{{- if not (regexMatch "^[1-9][0-9]*[mhd]$" $every) }}
{{- fail (printf "monitors.schedules: every '%s' is not a whole number of minutes, hours or days (5m, 1h, 1d)" $every) }}
{{- end }}
{{- $n := int (trimSuffix "m" (trimSuffix "h" (trimSuffix "d" $every))) }}
{{- if hasSuffix "d" $every }}
{{- if eq $n 1 }}0 0 * * *{{ else }}0 0 */{{ $n }} * *{{ end }}
{{- else if hasSuffix "h" $every }}
{{- if eq (mod $n 24) 0 }}
{{- include "kiln.cron" (printf "%dd" (div $n 24)) }}
{{- else if eq (mod 24 $n) 0 }}
{{- if eq $n 1 }}0 * * * *{{ else }}0 */{{ $n }} * * *{{ end }}
{{- else }}
{{- fail (printf "monitors.schedules: every '%s': a CronJob runs on hours that divide a day evenly (1h, 2h, 3h, 4h, 6h, 8h, 12h)" $every) }}
{{- end }}
{{- else }}
{{- if eq (mod $n 60) 0 }}
{{- include "kiln.cron" (printf "%dh" (div $n 60)) }}
{{- else if eq (mod 60 $n) 0 }}
{{- if eq $n 1 }}* * * * *{{ else }}*/{{ $n }} * * * *{{ end }}
{{- else }}
{{- fail (printf "monitors.schedules: every '%s': a CronJob runs on minutes that divide an hour evenly (1m, 5m, 10m, 15m, 30m)" $every) }}
{{- end }}
{{- end }}
{{- end }}

{{/* CronJob's API group version on the cluster being installed on: batch/v1 from Kubernetes 1.21, v1beta1 before. */}}
{{- define "kiln.cronJobApiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version }}batch/v1{{ else }}batch/v1beta1{{ end }}
{{- end }}
