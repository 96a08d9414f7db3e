{{/*
Names, labels and shared snippets. Every object gets its labels from "buntime.labels" and every
selector from "buntime.selectorLabels", so the two can never drift apart.
*/}}

{{/* The chart name, overridable. Cut to 63 characters: label values and DNS-1123 labels stop there. */}}
{{- define "buntime.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The resource name prefix: fullnameOverride, else the release name when it already contains the
chart name (release "buntime" gives "buntime", not "buntime-buntime"), else "<release>-<chart>".
Cut to 63 characters because Service names are DNS-1123 labels; buntime.checkFullname then caps it
so that the suffixed names ("-operator-webhook-tls") fit uncut.
*/}}
{{- define "buntime.fullname" -}}
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

{{/*
"<fullname>-<suffix>". Never cut: two names cut to 63 characters can become one (the runtime
Secret and the operator's runtime-turso Secret, the data and admin Services), so the prefix is
capped instead (buntime.checkFullname).
*/}}
{{- define "buntime.componentName" -}}
{{- include "buntime.checkFullname" .ctx -}}
{{- printf "%s-%s" (include "buntime.fullname" .ctx) .suffix -}}
{{- end -}}

{{/*
Stops the render when the prefix is too long for the longest name the chart builds,
"<fullname>-operator-webhook-tls" (63 characters at most), whatever is enabled, so enabling a part
later never fails. Renders nothing. Called by validate.yaml and by every buntime.componentName
(templates render in no fixed order: whichever comes first names the limit).
*/}}
{{- define "buntime.longestSuffix" -}}operator-webhook-tls{{- end -}}
{{- define "buntime.checkFullname" -}}
{{- $fullname := include "buntime.fullname" . -}}
{{- $suffix := include "buntime.longestSuffix" . -}}
{{- $max := sub 62 (len $suffix) -}}
{{- if gt (len $fullname) (int $max) -}}
{{- fail (printf "the resource name prefix %q is %d characters, at most %d fit: the longest name the chart builds, %s-%s, must stay within the 63 characters of a Kubernetes name (cut names would collide). Use a shorter release name (the prefix is the release name when it contains %q, else <release>-%s), or a shorter fullnameOverride" $fullname (len $fullname) (int $max) $fullname $suffix (include "buntime.name" .) (include "buntime.name" .)) -}}
{{- end -}}
{{- end -}}

{{/* helm.sh/chart: "<name>-<version>" with "+" replaced, since "+" is not allowed in label values. */}}
{{- define "buntime.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels. Only name, instance and component: selectors are immutable on Deployments and
StatefulSets, so nothing that changes between releases (version, chart) may appear here.
Call with (dict "ctx" $ "component" "runtime").
*/}}
{{- define "buntime.selectorLabels" -}}
app.kubernetes.io/name: {{ include "buntime.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels: the selector labels plus the recommended ones and commonLabels. */}}
{{- define "buntime.labels" -}}
{{ include "buntime.selectorLabels" . }}
helm.sh/chart: {{ include "buntime.chart" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: buntime
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The image reference; the tag follows the chart's appVersion unless image.tag is set. */}}
{{- define "buntime.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
ServiceAccount of a component: "<fullname>-<suffix>" when created, else the named or "default" one.
Call with (dict "ctx" $ "key" "tursoServer" "suffix" "turso"); key is the component's values key.
*/}}
{{- define "buntime.serviceAccountName" -}}
{{- $sa := index .ctx.Values .key "serviceAccount" -}}
{{- if $sa.create -}}
{{- default (include "buntime.componentName" (dict "ctx" .ctx "suffix" .suffix)) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* Object names shared by several templates. */}}
{{- define "buntime.runtime.configMapName" -}}
{{- include "buntime.componentName" (dict "ctx" . "suffix" "runtime") -}}
{{- end -}}
{{- define "buntime.runtime.secretName" -}}
{{- include "buntime.componentName" (dict "ctx" . "suffix" "runtime") -}}
{{- end -}}
{{/* The runtime's scoped tokens: written by the operator (never by Helm), read by the runtime pods. */}}
{{- define "buntime.runtime.tursoSecretName" -}}
{{- include "buntime.componentName" (dict "ctx" . "suffix" "runtime-turso") -}}
{{- end -}}
{{/* Where the runtime container mounts that Secret's plugin token (a volume the kubelet refreshes). */}}
{{- define "buntime.runtime.tursoTokenDir" -}}
/var/run/secrets/buntime/turso
{{- end -}}
{{/* The read-only metrics token, apart from the other credentials so a scraper can be given it alone. */}}
{{- define "buntime.turso.metricsSecretName" -}}
{{- include "buntime.componentName" (dict "ctx" . "suffix" "turso-metrics") -}}
{{- end -}}
{{- define "buntime.turso.name" -}}
{{- include "buntime.componentName" (dict "ctx" . "suffix" "turso") -}}
{{- end -}}
{{- define "buntime.turso.adminName" -}}
{{- include "buntime.componentName" (dict "ctx" . "suffix" "turso-admin") -}}
{{- end -}}
{{- define "buntime.operator.name" -}}
{{- include "buntime.componentName" (dict "ctx" . "suffix" "operator") -}}
{{- end -}}
{{- define "buntime.operator.webhookServiceName" -}}
{{- include "buntime.componentName" (dict "ctx" . "suffix" "operator-webhook") -}}
{{- end -}}
{{- define "buntime.operator.webhookSecretName" -}}
{{- include "buntime.componentName" (dict "ctx" . "suffix" "operator-webhook-tls") -}}
{{- end -}}

{{/* The Secret holding turso-server's tokens: the user's existing one, or the one the chart generates. */}}
{{- define "buntime.turso.authSecretName" -}}
{{- default (include "buntime.componentName" (dict "ctx" . "suffix" "turso-auth")) .Values.tursoServer.auth.existingSecret -}}
{{- end -}}

{{/*
Data URL of turso-server. The short form resolves inside the release namespace (the runtime);
the operator writes URLs into Secrets read by apps in *other* namespaces, so it gets the
namespace-qualified form. Call with (dict "ctx" $ "qualified" true|false).
*/}}
{{- define "buntime.turso.dataUrl" -}}
{{- $host := include "buntime.turso.name" .ctx -}}
{{- if .qualified -}}
{{- $host = printf "%s.%s.svc" $host .ctx.Release.Namespace -}}
{{- end -}}
{{- printf "http://%s:%d" $host (int .ctx.Values.tursoServer.service.dataPort) -}}
{{- end -}}

{{- define "buntime.turso.adminUrl" -}}
{{- printf "http://%s:%d" (include "buntime.turso.adminName" .) (int .Values.tursoServer.service.adminPort) -}}
{{- end -}}

{{/* The operator only runs beside the in-cluster turso-server: it provisions databases there. */}}
{{- define "buntime.operator.enabled" -}}
{{- if and .Values.tursoServer.enabled .Values.operator.enabled -}}true{{- end -}}
{{- end -}}

{{- define "buntime.webhook.enabled" -}}
{{- if and (include "buntime.operator.enabled" .) .Values.operator.webhook.enabled -}}true{{- end -}}
{{- end -}}

{{/*
A duration value as its environment string. A string ("90s", "1h30m") is kept as it is; a number
is seconds. YAML numbers (values files, --set-json) reach templates as float64, and toString would
print 2592000 as "2.592e+06", which no duration parser accepts: a float64 is printed in fixed
notation (six decimals, trailing zeros cut), so 2592000 -> "2592000" and 0.05 -> "0.05".
*/}}
{{- define "buntime.duration" -}}
{{- if kindIs "float64" . -}}
{{- regexReplaceAll "\\.?0*$" (printf "%f" .) "" -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/*
One environment entry for a plugin setting: (list "ENV_NAME" value "type"). Renders nothing when
the value is unset or the empty string, so the runtime falls back to the plugin manifest's option.
0 and false are real values and are rendered (Helm's `default` would treat them as unset).
Integers go through int64: YAML numbers reach templates as float64 and large ones would print
as 1e+06; durations go through buntime.duration for the same reason. A list (plugins.proxy.rules) becomes the JSON array the runtime parses; an empty list
renders nothing, like "".
*/}}
{{- define "buntime.plugins.envValue" -}}
{{- $value := index . 1 -}}
{{- $type := index . 2 -}}
{{- if not (kindIs "invalid" $value) -}}
{{- if eq $type "int" -}}
{{- $value | int64 | toString -}}
{{- else if eq $type "duration" -}}
{{- include "buntime.duration" $value -}}
{{- else if eq $type "list" -}}
{{- if $value }}{{ $value | toJson }}{{ end -}}
{{- else -}}
{{- $value | toString -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A ConfigMap data line for a plugin setting (see buntime.plugins.envValue). */}}
{{- define "buntime.plugins.configEntry" -}}
{{- $value := include "buntime.plugins.envValue" . -}}
{{- if ne $value "" }}
{{ index . 0 }}: {{ $value | quote }}
{{- end -}}
{{- end -}}

{{/* A Secret data line (base64) for a secret plugin setting. */}}
{{- define "buntime.plugins.secretEntry" -}}
{{- $value := include "buntime.plugins.envValue" . -}}
{{- if ne $value "" }}
{{ index . 0 }}: {{ $value | b64enc | quote }}
{{- end -}}
{{- end -}}

{{/*
Pod-level settings every component shares: pull secrets, the pod security context, and no
service links. Kubernetes would otherwise inject "<SERVICE>_PORT=tcp://..." for every Service in
the namespace, and the runtime's own Service "buntime" would shadow BUNTIME_PORT.
*/}}
{{- define "buntime.podCommon" -}}
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Scheduling knobs of one component (dict "values" .Values.<component>). */}}
{{- define "buntime.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
The operator's rules inside a namespace it watches; the ClusterRole carries them when it watches
the whole cluster, a Role per namespace otherwise (operator-rbac.yaml).
*/}}
{{- define "buntime.operator.namespacedRules" -}}
# Its own resource: kopf lists, watches and patches it (progress annotations, the finalizer); the
# webhook reads one. kopf never PUTs: no update.
- apiGroups: [turso.buntime.io]
  resources: [tursonamespaces]
  verbs: [get, list, watch, patch]
# Status: merge-patched by kopf and by the drift loop, never read or PUT on its own.
- apiGroups: [turso.buntime.io]
  resources: [tursonamespaces/status]
  verbs: [patch]
# The connection Secrets it writes (POST, PUT), restores after drift and removes on deletion.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, update, delete]
# The webhook GETs each ConfigMap (and Secret, above) a pod's envFrom names, to keep the variables
# it sets (it keeps only the key names). Never listed or watched.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
# kopf posts handler outcomes as core v1 Events (POST only; never events.k8s.io, never PATCH).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/*
How the runtime reaches its database: "server" (the in-cluster turso-server), "sync" (single
tenant: plugins.turso.mode=sync, or any plugins.turso.sync.url: a URL next to TURSO_MODE=local
would be silently dropped) or "local".
*/}}
{{- define "buntime.turso.mode" -}}
{{- $turso := .Values.plugins.turso | default dict -}}
{{- if .Values.tursoServer.enabled -}}server
{{- else if or (eq (toString (dig "mode" "" $turso)) "sync") (ne (toString (dig "sync" "url" "" $turso)) "") -}}sync
{{- else -}}local
{{- end -}}
{{- end -}}

{{/*
The plugins' values as the runtime ConfigMap renders them: plugins.turso.mode follows
"buntime.turso.mode" (sync whenever sync.url is set), so TURSO_MODE never contradicts TURSO_SYNC_URL;
beside the in-cluster turso-server no TURSO_MODE is rendered at all (the runtime refuses
TURSO_MODE=local next to TURSO_SERVER_URL, TURSO_MODE_CONFLICT).
*/}}
{{- define "buntime.plugins.effective" -}}
{{- $plugins := deepCopy (.Values.plugins | default dict) -}}
{{- $mode := include "buntime.turso.mode" . -}}
{{- $turso := $plugins.turso | default dict -}}
{{- if eq $mode "sync" -}}
{{- $_ := set $turso "mode" "sync" -}}
{{- else if eq $mode "server" -}}
{{- $_ := unset $turso "mode" -}}
{{- end -}}
{{- $_ := set $plugins "turso" $turso -}}
{{- toJson $plugins -}}
{{- end -}}
