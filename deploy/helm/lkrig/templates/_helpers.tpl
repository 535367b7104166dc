{{/* Object names: the release's name, with the chart's unless the release already has it. */}}
{{- define "lkrig.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one component. The component is the docker-compose.yml service it runs
(agent, locust-master, locust-worker): tests/test_helm_chart.py pairs them by it. */}}
{{- define "lkrig.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lkrig.labels" -}}
{{ include "lkrig.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The Service the Locust workers dial: compose's `locust-master` host. */}}
{{- define "lkrig.masterHost" -}}
{{ include "lkrig.fullname" . }}-locust-master
{{- end -}}

{{/* LIVEKIT_URL and the credentials, as compose's x-livekit-credentials and LIVEKIT_URL. */}}
{{- define "lkrig.livekitEnv" -}}
- name: LIVEKIT_URL
  value: {{ required "set livekit.url to your LiveKit server's ws:// or wss:// URL" .Values.livekit.url | quote }}
- name: LIVEKIT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required "set livekit.existingSecret to the Secret holding your LiveKit API key and secret" .Values.livekit.existingSecret }}
      key: {{ .Values.livekit.apiKeyKey }}
- name: LIVEKIT_API_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.livekit.existingSecret }}
      key: {{ .Values.livekit.apiSecretKey }}
- name: AGENT_NAME
  value: {{ .Values.agentName | quote }}
{{- end -}}

{{/* Compose's x-loadgen-env, for the Locust master and workers. */}}
{{- define "lkrig.loadgenEnv" -}}
{{ include "lkrig.livekitEnv" . }}
- name: LOADGEN_METRICS_PORT
  value: "9646"
- name: LOADGEN_METRICS_HOST
  value: 0.0.0.0
{{- end -}}

{{- define "lkrig.image" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}

{{/* Compose's `init: true`: with one process namespace the pod's pause process is PID 1, reaping
orphans and leaving the command its normal signal handling. The image runs as uid 10001. */}}
{{- define "lkrig.podSecurity" -}}
shareProcessNamespace: true
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "lkrig.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop: [ALL]
{{- end -}}
