{{/* Names and labels. */}}
{{- define "baton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "baton.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "baton.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "baton.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "baton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "baton.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Common labels; call with (dict "root" $ "component" "coordinator" "agent" "") */}}
{{- define "baton.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: baton
{{ include "baton.selectorLabels" . }}
{{- end -}}

{{- define "baton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "baton.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .agent }}
baton.io/agent: {{ .agent }}
{{- end }}
{{- end -}}

{{/* Image reference; call with (dict "root" $ "image" .image) */}}
{{- define "baton.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $repo := .image.repository -}}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Checks of one NATS auth block; call with (dict "auth" $auth "who" "coordinator") */}}
{{- define "baton.checkNatsAuth" -}}
{{- $a := .auth -}}
{{- if and (ne $a.type "none") (not $a.existingSecret) -}}
{{- fail (printf "%s: nats auth type %q needs natsAuth.existingSecret (or nats.auth.existingSecret)" .who $a.type) -}}
{{- end -}}
{{- if and (eq $a.type "userPassword") (not $a.user) -}}
{{- fail (printf "%s: nats auth type userPassword needs a user" .who) -}}
{{- end -}}
{{- end -}}

{{/* NATS environment; call with (dict "root" $ "auth" $auth "inboxPrefix" "…") */}}
{{- define "baton.natsEnv" -}}
{{- $a := .auth -}}
{{- $tls := .root.Values.nats.tls -}}
- name: BATON_NATS_URL
  value: {{ .root.Values.nats.url | quote }}
{{- if eq $a.type "userPassword" }}
- name: BATON_NATS_USER
  value: {{ $a.user | quote }}
- name: BATON_NATS_PASSWORD_FILE
  value: {{ printf "/var/run/secrets/baton/nats/%s" $a.passwordKey | quote }}
{{- else if eq $a.type "token" }}
- name: BATON_NATS_TOKEN_FILE
  value: {{ printf "/var/run/secrets/baton/nats/%s" $a.tokenKey | quote }}
{{- else if eq $a.type "creds" }}
- name: BATON_NATS_CREDS
  value: {{ printf "/var/run/secrets/baton/nats/%s" $a.credsKey | quote }}
{{- else if eq $a.type "nkey" }}
- name: BATON_NATS_NKEY
  value: {{ printf "/var/run/secrets/baton/nats/%s" $a.nkeyKey | quote }}
{{- end }}
{{- if $tls.enabled }}
- name: BATON_NATS_TLS_CA
  value: {{ printf "/var/run/secrets/baton/nats-tls/%s" $tls.caKey | quote }}
{{- if $tls.certKey }}
- name: BATON_NATS_TLS_CERT
  value: {{ printf "/var/run/secrets/baton/nats-tls/%s" $tls.certKey | quote }}
- name: BATON_NATS_TLS_KEY
  value: {{ printf "/var/run/secrets/baton/nats-tls/%s" $tls.keyKey | quote }}
{{- end }}
{{- if $tls.required }}
- name: BATON_NATS_TLS_REQUIRED
  value: "true"
{{- end }}
{{- end }}
{{- if .inboxPrefix }}
- name: BATON_NATS_INBOX_PREFIX
  value: {{ .inboxPrefix | quote }}
{{- end }}
{{- if .root.Values.otlpEndpoint }}
- name: BATON_OTLP_ENDPOINT
  value: {{ .root.Values.otlpEndpoint | quote }}
{{- end }}
- name: BATON_ADMIN_ADDR
  value: {{ printf "0.0.0.0:%v" .root.Values.admin.port | quote }}
{{- end -}}

{{/* NATS volumes and mounts; call with (dict "root" $ "auth" $auth) */}}
{{- define "baton.natsVolumes" -}}
{{- if ne .auth.type "none" }}
- name: nats-auth
  secret:
    secretName: {{ .auth.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if .root.Values.nats.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ .root.Values.nats.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "baton.natsMounts" -}}
{{- if ne .auth.type "none" }}
- name: nats-auth
  mountPath: /var/run/secrets/baton/nats
  readOnly: true
{{- end }}
{{- if .root.Values.nats.tls.enabled }}
- name: nats-tls
  mountPath: /var/run/secrets/baton/nats-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "baton.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "baton.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Probes on the admin port: /livez (the process serves) and /readyz (connected, bound, not draining). */}}
{{- define "baton.probes" -}}
startupProbe:
  httpGet: {path: /livez, port: admin}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /livez, port: admin}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end -}}

{{/* The effective spec of one worker: workerDefaults overlaid with workers.<agent>. */}}
{{- define "baton.worker" -}}
{{- $w := mergeOverwrite (deepCopy .root.Values.workerDefaults) (deepCopy (.spec | default dict)) -}}
{{- $_ := set $w "image" (mergeOverwrite (dict "repository" (printf "baton-agent-%s" .agent) "tag" "" "digest" "") ($w.image | default dict)) -}}
{{- toYaml $w -}}
{{- end -}}
