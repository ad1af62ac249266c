{{/* Names, labels and the proxy's command line, shared by the templates. */}}

{{- define "ice-ingress.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name when it already contains the chart's name. */}}
{{- define "ice-ingress.fullname" -}}
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

{{- define "ice-ingress.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ice-ingress.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ice-ingress.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ice-ingress.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The proxy pods: what the Service, PDB, HPA, NetworkPolicy and metrics Service select. */}}
{{- define "ice-ingress.proxySelectorLabels" -}}
{{ include "ice-ingress.selectorLabels" . }}
app.kubernetes.io/component: udp-ingress
{{- end }}

{{- define "ice-ingress.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ice-ingress.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ice-ingress.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The namespace of the Service that discovery k8s watches (and of its Role). */}}
{{- define "ice-ingress.discoveryNamespace" -}}
{{- default .Release.Namespace .Values.discovery.k8s.namespace }}
{{- end }}

{{/* The bundled videobridge pods' labels. */}}
{{- define "ice-ingress.videobridgeSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ice-ingress.name" . }}-jvb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: jvb
{{- end }}

{{/* The labels the headless discovery Service selects: the bundled videobridge's, or the given ones. */}}
{{- define "ice-ingress.backendSelector" -}}
{{- if .Values.videobridge.enabled }}
{{- include "ice-ingress.videobridgeSelectorLabels" . }}
{{- else if .Values.discovery.k8s.createService.enabled }}
{{- toYaml .Values.discovery.k8s.createService.selector }}
{{- end }}
{{- end }}

{{/*
--drain-timeout in whole seconds, rounded up (the proxy's durations: ms, s, m, h; src/config.ts
parseDuration): the grace period must outlast the drain.
*/}}
{{- define "ice-ingress.drainSeconds" -}}
{{- $d := toString .Values.drainTimeout }}
{{- $n := regexFind "^[0-9]+(\\.[0-9]+)?" $d | float64 }}
{{- $unit := regexFind "(ms|s|m|h)$" $d }}
{{- $scale := get (dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0) $unit }}
{{- mulf $n $scale | ceil | int }}
{{- end }}

{{/* The headless Service that lists the proxy pods for peers.mode dns. */}}
{{- define "ice-ingress.peersServiceName" -}}
{{- printf "%s-peers" (include "ice-ingress.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
--peers (docs/peers.md): the EndpointSlices of the release's own Service (k8s), or the name of
the headless peer Service (dns; fully qualified: the proxy resolves it as given).
*/}}
{{- define "ice-ingress.peersFlag" -}}
{{- if eq .Values.peers.mode "k8s" }}
{{- printf "k8s:%s" (include "ice-ingress.fullname" .) }}
{{- else }}
{{- printf "dns:%s.%s.svc.%s" (include "ice-ingress.peersServiceName" .) .Release.Namespace .Values.peers.clusterDomain }}
{{- end }}
{{- end }}

{{/* The proxy talks to the API server: discovery k8s, or peers k8s. */}}
{{- define "ice-ingress.apiClient" -}}
{{- or (eq .Values.discovery.mode "k8s") (eq .Values.peers.mode "k8s") }}
{{- end }}

{{/*
The proxy's flags (src/config.ts OPTIONS), one per value marked "CLI:" in values.yaml. Only the
chosen discovery mode's flags are given.
*/}}
{{- define "ice-ingress.args" -}}
{{- $v := .Values }}
{{- if $v.fastPath.enabled }}
- --listen=$(POD_IP):{{ $v.listenPort }}
{{- else }}
- --listen=0.0.0.0:{{ $v.listenPort }}
{{- end }}
- --admin=0.0.0.0:{{ $v.adminPort }}
- --discovery={{ $v.discovery.mode }}
{{- if eq $v.discovery.mode "k8s" }}
- --service={{ $v.discovery.k8s.service }}
{{- with $v.discovery.k8s.namespace }}
- --namespace={{ . }}
{{- end }}
{{- with $v.discovery.k8s.portName }}
- --port-name={{ . }}
{{- end }}
{{- else if eq $v.discovery.mode "dns" }}
- --dns-name={{ $v.discovery.dns.name }}
- --backend-port={{ $v.discovery.dns.backendPort }}
- --dns-interval={{ $v.discovery.dns.interval }}
- --dns-grace={{ $v.discovery.dns.grace }}
{{- else }}
- --backends={{ join "," $v.discovery.static.backends }}
{{- end }}
- --strict-prefix={{ $v.strictPrefix }}
- --probe-rate={{ int64 $v.admission.probeRate }}
- --directed-probe-rate={{ int64 $v.admission.directedProbeRate }}
- --max-pending-per-source={{ int64 $v.admission.maxPendingPerSource }}
- --max-sessions={{ int64 $v.admission.maxSessions }}
- --probe-rounds={{ int64 $v.admission.probeRounds }}
- --probe-timeout={{ $v.admission.probeTimeout }}
- --negative-ttl={{ $v.admission.negativeTtl }}
- --learned-max={{ int64 $v.admission.learnedMax }}
- --idle-timeout={{ $v.sessions.idleTimeout }}
- --upstream-ports={{ $v.sessions.upstreamPorts }}
- --port-quarantine={{ $v.sessions.portQuarantine }}
- --socket-buffer={{ int64 $v.socketBuffer }}
- --drain-timeout={{ $v.drainTimeout }}
- --drain-readiness={{ $v.drainReadiness }}
- --log-level={{ $v.logLevel }}
- --workers={{ $v.workers }}
{{- if $v.fastPath.enabled }}
- --fast-path={{ $v.fastPath.kind }}
{{- end }}
{{- if ne $v.peers.mode "off" }}
- --peers={{ include "ice-ingress.peersFlag" . }}
- --peer-port={{ int64 $v.peers.port }}
- --pod-ip=$(POD_IP)
- --peer-timeout={{ $v.peers.timeout }}
- --peer-query-rate={{ int64 $v.peers.queryRate }}
- --peer-query-burst={{ int64 $v.peers.queryBurst }}
- --peer-negative-ttl={{ $v.peers.negativeTtl }}
{{- end }}
{{- range $v.extraArgs }}
- {{ . }}
{{- end }}
{{- end }}
