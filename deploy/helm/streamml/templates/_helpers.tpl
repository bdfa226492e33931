{{/* Names and labels, as `helm create` lays them out. */}}
{{- define "streamml.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamml.fullname" -}}
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

{{- define "streamml.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "streamml.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streamml
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "gateway"). */}}
{{- define "streamml.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamml.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "streamml.componentLabels" -}}
{{ include "streamml.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "streamml.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "streamml.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamml.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamml.trackingUri" -}}
{{- if .Values.mlflow.trackingUri }}
{{- .Values.mlflow.trackingUri }}
{{- else if .Values.mlflow.server.enabled }}
{{- printf "http://%s-mlflow:%d" (include "streamml.fullname" .) (int .Values.mlflow.server.port) }}
{{- else }}
{{- fail "mlflow.trackingUri is required unless mlflow.server.enabled=true" }}
{{- end }}
{{- end }}

{{/* The settings every streamml process reads (docs/configuration.md names each). */}}
{{- define "streamml.env" -}}
- name: REDIS_URL
  value: {{ .Values.redis.url | quote }}
- name: STREAMML_REDIS_CLUSTER
  value: {{ .Values.redis.cluster | quote }}
{{- with .Values.redis.seeds }}
- name: STREAMML_REDIS_SEEDS
  value: {{ toJson . | quote }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: STREAMML_REDIS_PASSWORD_FILE
  value: /etc/streamml/redis/password
{{- end }}
- name: MLFLOW_TRACKING_URI
  value: {{ include "streamml.trackingUri" . | quote }}
{{- with .Values.mlflow.routes }}
- name: STREAMML_MLFLOW_ROUTES
  value: {{ toJson . | quote }}
{{- end }}
- name: STREAMML_STATE_DIR
  value: /var/lib/streamml
- name: STREAMML_STREAM_NAME
  value: {{ .Values.stream.name | quote }}
- name: STREAMML_STREAM_GROUP
  value: {{ .Values.stream.group | quote }}
{{- if .Values.stream.partitions }}
- name: STREAMML_STREAM_PARTITIONS
  value: {{ .Values.stream.partitions | quote }}
{{- end }}
{{- end }}

{{/* Volumes every streamml pod mounts: writable state and /tmp (the root filesystem is read-only),
and the Redis password as a file. */}}
{{- define "streamml.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.redis.existingSecret }}
- name: redis-password
  secret:
    secretName: {{ .Values.redis.existingSecret }}
    items:
      - key: {{ .Values.redis.passwordKey }}
        path: password
{{- end }}
{{- end }}

{{- define "streamml.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.redis.existingSecret }}
- name: redis-password
  mountPath: /etc/streamml/redis
  readOnly: true
{{- end }}
{{- end }}

{{- define "streamml.podSpecCommon" -}}
serviceAccountName: {{ include "streamml.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
