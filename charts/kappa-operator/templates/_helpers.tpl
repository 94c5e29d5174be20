{{- define "kappa-operator.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kappa-operator.labels" -}}
app.kubernetes.io/name: kappa-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kappa-operator.selectorLabels" -}}
app.kubernetes.io/name: kappa-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
