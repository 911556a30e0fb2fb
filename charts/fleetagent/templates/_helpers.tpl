{{/*
Labels on every object's metadata: the same as deploy/ (app.kubernetes.io/name
where deploy/ sets it, part-of everywhere) plus Helm's own.
*/}}
{{- define "fleetagent.labels" -}}
app.kubernetes.io/part-of: fleetagent
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* An image reference: repository:tag, or repository:tag@digest. */}}
{{- define "fleetagent.image" -}}
{{- $tag := .image.tag | default .appVersion -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* The agents' OTLP endpoint: the value, or the gateway's Service. */}}
{{- define "fleetagent.otlpEndpoint" -}}
{{- if .Values.otlp.endpoint -}}
{{- .Values.otlp.endpoint -}}
{{- else if .Values.gateway.enabled -}}
{{- printf "http://fleetagent-otel-gateway.%s.svc:4317" .Release.Namespace -}}
{{- else -}}
{{- fail "otlp.endpoint is empty and gateway.enabled is false: set otlp.endpoint to your collector's OTLP endpoint, or enable the example gateway" -}}
{{- end -}}
{{- end }}

{{/*
GOMEMLIMIT: the value, or 90% of resources.limits.memory rounded down to MiB.
A limit in another unit needs goMemLimit set.
*/}}
{{- define "fleetagent.goMemLimit" -}}
{{- if .Values.goMemLimit -}}
{{- .Values.goMemLimit -}}
{{- else -}}
{{- $limit := toString (.Values.resources.limits.memory | required "resources.limits.memory is required: the agent's GOMEMLIMIT is derived from it") -}}
{{- $mib := 0 -}}
{{- if regexMatch "^[0-9]+Mi$" $limit -}}
{{- $mib = trimSuffix "Mi" $limit | atoi -}}
{{- else if regexMatch "^[0-9]+Gi$" $limit -}}
{{- $mib = mul (trimSuffix "Gi" $limit | atoi) 1024 -}}
{{- else -}}
{{- fail (printf "resources.limits.memory %q is not in Mi or Gi: set goMemLimit (e.g. 115MiB) to 80-90%% of it" $limit) -}}
{{- end -}}
{{- printf "%dMiB" (div (mul $mib 9) 10) -}}
{{- end -}}
{{- end }}
