{{/* The release's base name: <release>-rtcedge, or the release name when it already says rtcedge. */}}
{{- define "rtcedge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; "component" is signaling, relay, etcd or demo-origin. */}}
{{- define "rtcedge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "rtcedge.selectorLabels" . }}
{{- end -}}

{{- define "rtcedge.selectorLabels" -}}
app.kubernetes.io/name: rtcedge
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An rtcedge image: [registry/]rtcedge/<name>:<tag>. */}}
{{- define "rtcedge.image" -}}
{{- $tag := .ctx.Values.image.tag | default .ctx.Chart.AppVersion -}}
{{- if .ctx.Values.image.registry -}}
{{ printf "%s/rtcedge/%s:%s" (trimSuffix "/" .ctx.Values.image.registry) .name $tag }}
{{- else -}}
{{ printf "rtcedge/%s:%s" .name $tag }}
{{- end -}}
{{- end -}}

{{- define "rtcedge.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "rtcedge.fullname" .) -}}
{{- end -}}

{{/* The etcd endpoints, comma-separated. */}}
{{- define "rtcedge.etcdEndpoints" -}}
{{- if eq .Values.etcd.mode "bundled" -}}
{{- $name := printf "%s-etcd" (include "rtcedge.fullname" .) -}}
{{- $eps := list -}}
{{- range $i := until (int .Values.etcd.bundled.replicas) -}}
{{- $eps = append $eps (printf "%s-%d.%s-headless.%s.svc:2379" $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{- join "," $eps -}}
{{- else if eq .Values.etcd.mode "external" -}}
{{- required "etcd.external.endpoints: list your etcd members (host:port), or set etcd.mode=bundled" (join "," .Values.etcd.external.endpoints) -}}
{{- else -}}
{{- fail (printf "etcd.mode %q: want external or bundled" .Values.etcd.mode) -}}
{{- end -}}
{{- end -}}

{{/* The etcd client variables of signaling and the relays. */}}
{{- define "rtcedge.etcdEnv" -}}
- name: RTCEDGE_ETCD_ENDPOINTS
  value: {{ include "rtcedge.etcdEndpoints" . | quote }}
{{- if and (eq .Values.etcd.mode "external") .Values.etcd.external.tls.secretName }}
- name: RTCEDGE_ETCD_CA
  value: /etc/rtcedge/etcd/ca.crt
- name: RTCEDGE_ETCD_CERT
  value: /etc/rtcedge/etcd/tls.crt
- name: RTCEDGE_ETCD_KEY
  value: /etc/rtcedge/etcd/tls.key
{{- end }}
{{- if and (eq .Values.etcd.mode "external") .Values.etcd.external.username }}
- name: RTCEDGE_ETCD_USERNAME
  value: {{ .Values.etcd.external.username | quote }}
- name: RTCEDGE_ETCD_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "etcd.external.passwordSecret: the Secret holding the etcd user's password (key: password)" .Values.etcd.external.passwordSecret }}
      key: password
{{- end }}
{{- end -}}

{{/* The etcd TLS volume and its mount, when external etcd uses TLS. */}}
{{- define "rtcedge.etcdVolume" -}}
{{- if and (eq .Values.etcd.mode "external") .Values.etcd.external.tls.secretName }}
- name: etcd-tls
  secret:
    secretName: {{ .Values.etcd.external.tls.secretName }}
{{- end }}
{{- end -}}
{{- define "rtcedge.etcdVolumeMount" -}}
{{- if and (eq .Values.etcd.mode "external") .Values.etcd.external.tls.secretName }}
- name: etcd-tls
  mountPath: /etc/rtcedge/etcd
  readOnly: true
{{- end }}
{{- end -}}

{{/* extraEnv as env entries; only RTCEDGE_* names are accepted. */}}
{{- define "rtcedge.extraEnv" -}}
{{- range $k, $v := . }}
{{- if not (hasPrefix "RTCEDGE_" $k) }}{{ fail (printf "extraEnv %s: only RTCEDGE_* variables (the binaries' flags)" $k) }}{{ end }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end -}}

{{/* The security context of the rtcedge containers: the images are FROM scratch and run as nobody. */}}
{{- define "rtcedge.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65534
runAsGroup: 65534
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
