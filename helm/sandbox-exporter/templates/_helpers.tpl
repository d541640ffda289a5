{{/* Names, labels, and what the templates derive from the values. */}}

{{- define "sandbox-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name. At most 52 characters: a StatefulSet's Pods carry a controller-revision-hash
label of the StatefulSet's name plus 11 characters, and a label value holds 63.
*/}}
{{- define "sandbox-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sandbox-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sandbox-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sandbox-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sandbox-exporter.labels" -}}
helm.sh/chart: {{ include "sandbox-exporter.chart" . }}
{{ include "sandbox-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sandbox-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sandbox-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Whether the configuration comes from an existing object rather than `config`. */}}
{{- define "sandbox-exporter.configFromExisting" -}}
{{- if and .Values.configFrom.configMap .Values.configFrom.secret }}
{{- fail "configFrom: set configMap or secret, not both" }}
{{- end }}
{{- if or .Values.configFrom.configMap .Values.configFrom.secret }}true{{ end }}
{{- end }}

{{/* The ConfigMap the chart makes from `config`. */}}
{{- define "sandbox-exporter.configMapName" -}}
{{- printf "%s-config" (include "sandbox-exporter.fullname" .) }}
{{- end }}

{{/*
The namespaces where Kubernetes targets of this cluster make their probe Pods, as JSON
{"items": [{"name": NS, "networkPolicies": BOOL}, ...]}, sorted by name. From
kubernetesProbes.namespaces when given, else from `config`: every target whose backend is
kubernetes (or k8s) and that has no kubeconfig (one with a kubeconfig probes another
cluster, where this chart grants nothing).
*/}}
{{- define "sandbox-exporter.probeNamespaces" -}}
{{- $found := dict }}
{{- $targets := list }}
{{- if and (not (include "sandbox-exporter.configFromExisting" .)) (kindIs "slice" (index .Values.config "targets")) }}
{{- $targets = index .Values.config "targets" }}
{{- end }}
{{- range $i, $target := $targets }}
{{- if and (kindIs "map" $target) (has (toString (index $target "backend")) (list "kubernetes" "k8s")) }}
{{- $options := index $target "kubernetes" | default dict }}
{{- if index $options "create_namespace" }}
{{- fail (printf "config.targets[%d] (%s): create_namespace: true needs get and create on namespaces, a ClusterRole this chart does not grant; set it to false and let kubernetesProbes.createNamespaces make the namespace" $i (toString (index $target "name"))) }}
{{- end }}
{{- if not (index $options "kubeconfig") }}
{{- $namespace := toString (index $options "namespace" | default "sandbox-exporter-probes") }}
{{- if contains "$" $namespace }}
{{- fail (printf "config.targets[%d] (%s): the namespace %q is read from the environment; name the probe namespaces in kubernetesProbes.namespaces" $i (toString (index $target "name")) $namespace) }}
{{- end }}
{{- $previous := index $found $namespace | default dict }}
{{- $policies := or (index $previous "networkPolicies") (index $options "network_policy") | default false }}
{{- $_ := set $found $namespace (dict "name" $namespace "networkPolicies" $policies) }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.kubernetesProbes.namespaces }}
{{- $found = dict }}
{{- range .Values.kubernetesProbes.namespaces }}
{{- $_ := set $found .name (dict "name" .name "networkPolicies" (index . "networkPolicies" | default false)) }}
{{- end }}
{{- end }}
{{- $items := list }}
{{- range $name := keys $found | sortAlpha }}
{{- $items = append $items (index $found $name) }}
{{- end }}
{{- toJson (dict "items" $items) }}
{{- end }}

{{/* Whether the Pod mounts a service account token. */}}
{{- define "sandbox-exporter.automountToken" -}}
{{- $automount := index .Values.serviceAccount "automountToken" }}
{{- if kindIs "bool" $automount }}
{{- $automount }}
{{- else }}
{{- $namespaces := (include "sandbox-exporter.probeNamespaces" . | fromJson).items }}
{{- gt (len $namespaces) 0 }}
{{- end }}
{{- end }}

{{/* The instance name (Deployment) or its prefix (DaemonSet). */}}
{{- define "sandbox-exporter.instance" -}}
{{- default (include "sandbox-exporter.fullname" .) .Values.instance }}
{{- end }}

{{/* A probe from the values, its httpGet scheme from webConfig.scheme unless it sets one. */}}
{{- define "sandbox-exporter.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if and (kindIs "map" (index $probe "httpGet")) (not (index $probe.httpGet "scheme")) }}
{{- $_ := set $probe.httpGet "scheme" .scheme }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/* Checks across values that the schema cannot express. */}}
{{- define "sandbox-exporter.validate" -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownMarginSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed shutdownMarginSeconds (%d): --shutdown.timeout is their difference" (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownMarginSeconds)) }}
{{- end }}
{{- if and .Values.daemonSet.hostSocket.enabled (ne .Values.mode "DaemonSet") }}
{{- fail (printf "daemonSet.hostSocket.enabled is for mode DaemonSet (mode is %s): a node's engine socket means something only to an exporter pinned to that node" .Values.mode) }}
{{- end }}
{{- if and .Values.instance (eq .Values.mode "StatefulSet") }}
{{- fail "instance: must be empty in mode StatefulSet, where each exporter's instance is its Pod's name (<fullname>-<ordinal>)" }}
{{- end }}
{{- if and (eq .Values.mode "Deployment") (gt (len (include "sandbox-exporter.instance" .)) 63) }}
{{- fail "instance: at most 63 characters (it is a label value)" }}
{{- end }}
{{- if and (eq .Values.mode "StatefulSet") (semverCompare "<1.28.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "mode StatefulSet needs Kubernetes 1.28 or later (the Pod label apps.kubernetes.io/pod-index gives each exporter its shard); this is %s" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if and (include "sandbox-exporter.configFromExisting" .) (not .Values.configFrom.key) }}
{{- fail "configFrom.key: the key of the configuration file in the ConfigMap or Secret is needed" }}
{{- end }}
{{- end }}
