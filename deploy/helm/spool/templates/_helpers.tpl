{{- define "spool.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "spool.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "spool.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "spool.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "spool.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "spool.postgres" -}}
{{- if .Values.store.postgres.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "spool.check" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not (include "spool.postgres" .)) -}}
{{- fail "replicaCount > 1 needs PostgreSQL: set store.postgres.existingSecret (the embedded store is one replica's)" -}}
{{- end -}}
{{- if and (include "spool.postgres" .) (not .Values.secretKey.existingSecret) -}}
{{- fail "on PostgreSQL every replica needs the same secret key: set secretKey.existingSecret" -}}
{{- end -}}
{{- end -}}
