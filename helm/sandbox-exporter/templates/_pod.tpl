{{/*
The Pod template every mode shares. What differs by mode is the environment that gives
the exporter its instance (and, for StatefulSet, its shard) and the DaemonSet's socket.
*/}}
{{- define "sandbox-exporter.podTemplate" -}}
{{- $existing := include "sandbox-exporter.configFromExisting" . -}}
{{- $socket := .Values.daemonSet.hostSocket -}}
{{- $useSocket := and (eq .Values.mode "DaemonSet") $socket.enabled -}}
metadata:
  labels:
    {{- include "sandbox-exporter.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or .Values.podAnnotations (and .Values.rollOnConfigChange (not $existing)) }}
  annotations:
    {{- if and .Values.rollOnConfigChange (not $existing) }}
    checksum/config: {{ toYaml .Values.config | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  serviceAccountName: {{ include "sandbox-exporter.serviceAccountName" . }}
  automountServiceAccountToken: {{ include "sandbox-exporter.automountToken" . }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- $podSecurity := deepCopy .Values.podSecurityContext }}
    {{- if $useSocket }}
    {{- $groups := concat (index $podSecurity "supplementalGroups" | default list) ($socket.supplementalGroups | default list) | uniq }}
    {{- if $groups }}
    {{- $_ := set $podSecurity "supplementalGroups" $groups }}
    {{- end }}
    {{- end }}
    {{- toYaml $podSecurity | nindent 4 }}
  containers:
    - name: exporter
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- with .Values.extraArgs }}
      args:
        - run
        {{- toYaml . | nindent 8 }}
      {{- end }}
      env:
        {{- if eq .Values.mode "DaemonSet" }}
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: SANDBOX_EXPORTER_INSTANCE
          value: "{{ include "sandbox-exporter.instance" . }}-$(NODE_NAME)"
        {{- else if eq .Values.mode "StatefulSet" }}
        - name: SANDBOX_EXPORTER_INSTANCE
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: SANDBOX_EXPORTER_SHARD_COUNT
          value: {{ .Values.statefulSet.replicas | quote }}
        - name: SANDBOX_EXPORTER_SHARD_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- else }}
        - name: SANDBOX_EXPORTER_INSTANCE
          value: {{ include "sandbox-exporter.instance" . | quote }}
        {{- end }}
        - name: SANDBOX_EXPORTER_CONFIG_FILE
          value: "/etc/sandbox-exporter/config/{{ if $existing }}{{ .Values.configFrom.key }}{{ else }}config.yaml{{ end }}"
        {{- with .Values.configAutoReloadInterval }}
        - name: SANDBOX_EXPORTER_CONFIG_AUTO_RELOAD_INTERVAL
          value: {{ . | quote }}
        {{- end }}
        - name: SANDBOX_EXPORTER_WEB_LISTEN_ADDRESS
          value: ":9878"
        {{- if .Values.webConfig.existingSecret }}
        - name: SANDBOX_EXPORTER_WEB_CONFIG_FILE
          value: "/etc/sandbox-exporter/web/{{ .Values.webConfig.key }}"
        {{- end }}
        - name: SANDBOX_EXPORTER_SHUTDOWN_TIMEOUT
          value: "{{ sub (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownMarginSeconds) }}s"
        - name: SANDBOX_EXPORTER_LOG_LEVEL
          value: {{ .Values.logLevel | quote }}
        - name: SANDBOX_EXPORTER_LOG_FORMAT
          value: {{ .Values.logFormat | quote }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: http
          containerPort: 9878
          protocol: TCP
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- include "sandbox-exporter.probe" (dict "probe" . "scheme" $.Values.webConfig.scheme) | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- include "sandbox-exporter.probe" (dict "probe" . "scheme" $.Values.webConfig.scheme) | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: config
          mountPath: /etc/sandbox-exporter/config
          readOnly: true
        {{- if .Values.webConfig.existingSecret }}
        - name: web-config
          mountPath: /etc/sandbox-exporter/web
          readOnly: true
        {{- end }}
        {{- if $useSocket }}
        - name: engine-socket
          mountPath: {{ $socket.mountPath }}
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        {{- with .Values.tmpSizeLimit }}
        sizeLimit: {{ . }}
        {{- end }}
    - name: config
      {{- if .Values.configFrom.secret }}
      secret:
        secretName: {{ .Values.configFrom.secret }}
      {{- else }}
      configMap:
        name: {{ .Values.configFrom.configMap | default (include "sandbox-exporter.configMapName" .) }}
      {{- end }}
    {{- if .Values.webConfig.existingSecret }}
    - name: web-config
      secret:
        secretName: {{ .Values.webConfig.existingSecret }}
    {{- end }}
    {{- if $useSocket }}
    - name: engine-socket
      hostPath:
        path: {{ $socket.hostPath }}
        type: Socket
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
