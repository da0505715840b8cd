{{/* The chart's name, the release's full name (63 characters at most), labels. */}}
{{- define "fedwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fedwarden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "fedwarden.instanceLabels" -}}
app.kubernetes.io/name: {{ include "fedwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* what the operator's Service, NetworkPolicy and ServiceMonitor select: the operator's pod */}}
{{- define "fedwarden.selectorLabels" -}}
{{ include "fedwarden.instanceLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "fedwarden.labels" -}}
{{ include "fedwarden.selectorLabels" . }}
{{ include "fedwarden.releaseLabels" . }}
{{- end -}}

{{/* the labels of every object but the component, which says what the object is part of */}}
{{- define "fedwarden.releaseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedwarden
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* metadata.annotations of every object (commonAnnotations), with extra ones in a dict */}}
{{- define "fedwarden.annotations" -}}
{{- $all := merge (dict) (.extra | default dict) (.root.Values.commonAnnotations | default dict) -}}
{{- with $all }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "fedwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fedwarden.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fedwarden.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
