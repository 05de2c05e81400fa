{{- define "mbo.name" -}}{{ .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}

{{- define "mbo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "mbo.labels" -}}
app.kubernetes.io/name: {{ include "mbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mbo.selector" -}}
app.kubernetes.io/name: {{ include "mbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mbo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "mbo.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "mbo.image" -}}
{{ required "image.repository is required: build the image from the Dockerfile, push it to your registry and set image.repository (docs/install.md)" .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* Rules for the watched resources; the same whether granted cluster-wide or per namespace. */}}
{{- define "mbo.workloadRules" -}}
- apiGroups: [mysqlbackup.dev]
  resources: [backuppolicies, backups, restores]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [mysqlbackup.dev]
  resources: [backuppolicies/status, backups/status, restores/status]
  verbs: [get, patch, update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
# The binlog archiver of a policy with pointInTimeRecovery: read, create, replace (spec change), delete.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, update, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
