{{/*
The pod of the Deployment, built as one mapping so that no key can appear twice: the chart's
spec, then extraPodSpecs merged into it (lists the chart fills appended to, mappings merged
key by key, other values replaced).
*/}}

{{/* Merges .src into the mapping .dst in place: mappings key by key, anything else replaced. */}}
{{- define "iam.mergeInto" -}}
{{- $dst := .dst -}}
{{- range $k, $v := .src -}}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) -}}
{{- include "iam.mergeInto" (dict "dst" (get $dst $k) "src" $v) -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when more than one replica may run (replicaCount > 1 or autoscaling), else "". */}}
{{- define "iam.multiReplica" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{/* The container security context: defaultSecurityContext with securityContext merged over. */}}
{{- define "iam.containerSecurityContext" -}}
{{- $sc := deepCopy (default dict .Values.defaultSecurityContext) -}}
{{- include "iam.mergeInto" (dict "dst" $sc "src" (default dict .Values.securityContext)) -}}
{{- toYaml $sc -}}
{{- end -}}

{{/* Seconds between SIGTERM and SIGKILL: longer than the shutdown delay and the drain. */}}
{{- define "iam.terminationGracePeriod" -}}
{{- $busy := add .Values.lifecycle.shutdownDelaySeconds .Values.lifecycle.drainSeconds -}}
{{- $set := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $set -}}
{{- add $busy 10 -}}
{{- else if le (int $set) (int $busy) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than lifecycle.shutdownDelaySeconds + lifecycle.drainSeconds (%d): the pod would be killed while it drains" (int $set) (int $busy)) -}}
{{- else -}}
{{- int $set -}}
{{- end -}}
{{- end -}}

{{- define "iam.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "iam.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Default spreading over nodes and zones (preferred), with more than one replica. */}}
{{- define "iam.topologySpread" -}}
{{- if .Values.topologySpreadConstraints -}}
{{- toYaml .Values.topologySpreadConstraints -}}
{{- else if and .Values.topologySpread.enabled (include "iam.multiReplica" .) -}}
{{- range .Values.topologySpread.topologyKeys }}
- maxSkew: {{ $.Values.topologySpread.maxSkew }}
  topologyKey: {{ . | quote }}
  whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "iam.selectorLabels" $ | nindent 6 }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "iam.podSpecBase" -}}
{{- $csc := include "iam.containerSecurityContext" . -}}
{{- $wait := and .Values.waitContainers.enabled .Values.waitContainers.curl.image -}}
serviceAccountName: {{ include "iam.serviceAccountName" . | quote }}
terminationGracePeriodSeconds: {{ include "iam.terminationGracePeriod" . }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "iam.pullSecrets" . }}
{{ . }}
{{- end }}
{{- if or $wait .Values.extraInitContainers }}
initContainers:
{{- if $wait }}
{{- $conn := include "iam.postgresql.connection" . | fromJson }}
{{- $issuer := include "iam.issuer" (dict "value" .Values.global.keycloak.privateUrl "root" .) }}
  - name: wait-postgresql
    image: "{{ .Values.waitContainers.curl.image }}:{{ .Values.waitContainers.curl.tag }}"
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    securityContext:
      {{- $csc | nindent 6 }}
    terminationMessagePolicy: {{ .Values.terminationMessagePolicy }}
    env:
      - name: WAIT_HOST
        value: {{ $conn.host | quote }}
      - name: WAIT_PORT
        value: {{ $conn.port | quote }}
      - name: WAIT_TIMEOUT
        value: {{ .Values.waitContainers.timeout | quote }}
    # A TCP connection to PostgreSQL's port (curl's telnet:// sends nothing; a connect time
    # of 0 means no connection).
    command:
      - sh
      - -c
      - |
        end=$(( $(date +%s) + WAIT_TIMEOUT ))
        while :; do
          t=$(curl -s -o /dev/null --connect-timeout 2 --max-time 3 -w '%{time_connect}' "telnet://$WAIT_HOST:$WAIT_PORT" </dev/null)
          case "$t" in ""|0|0.000000) ;; *) echo "postgresql $WAIT_HOST:$WAIT_PORT is up"; exit 0 ;; esac
          if [ "$(date +%s)" -ge "$end" ]; then
            echo "postgresql $WAIT_HOST:$WAIT_PORT not reachable after ${WAIT_TIMEOUT}s" >&2; exit 1
          fi
          echo "waiting for postgresql $WAIT_HOST:$WAIT_PORT"; sleep 2
        done
    resources:
      limits:
        cpu: 100m
        memory: 32Mi
      requests:
        cpu: 10m
        memory: 16Mi
{{- if $issuer }}
  - name: wait-keycloak
    image: "{{ .Values.waitContainers.curl.image }}:{{ .Values.waitContainers.curl.tag }}"
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    securityContext:
      {{- $csc | nindent 6 }}
    terminationMessagePolicy: {{ .Values.terminationMessagePolicy }}
    env:
      - name: WAIT_URL
        value: {{ $issuer | quote }}
      - name: WAIT_TIMEOUT
        value: {{ .Values.waitContainers.timeout | quote }}
    # The realm's issuer document answers 200 once Keycloak serves the realm.
    command:
      - sh
      - -c
      - |
        end=$(( $(date +%s) + WAIT_TIMEOUT ))
        until curl -fsS -o /dev/null --connect-timeout 2 --max-time 5 "$WAIT_URL"; do
          if [ "$(date +%s)" -ge "$end" ]; then
            echo "keycloak $WAIT_URL not ready after ${WAIT_TIMEOUT}s" >&2; exit 1
          fi
          echo "waiting for keycloak $WAIT_URL"; sleep 2
        done
        echo "keycloak $WAIT_URL is up"
    resources:
      limits:
        cpu: 100m
        memory: 32Mi
      requests:
        cpu: 10m
        memory: 16Mi
{{- end }}
{{- end }}
{{- range .Values.extraInitContainers }}
{{- /* The chart's container security context, the container's own merged over it. */ -}}
{{- $c := deepCopy . -}}
{{- $sc := fromYaml $csc -}}
{{- include "iam.mergeInto" (dict "dst" $sc "src" (default dict $c.securityContext)) -}}
{{- $_ := set $c "securityContext" $sc }}
  - {{- toYaml $c | nindent 4 }}
{{- end }}
{{- end }}
containers:
  - name: {{ .Chart.Name }}
    image: {{ include "iam.image" . | quote }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    {{- with include "iam.command" . }}
    command:
      - {{ . | quote }}
    {{- end }}
    securityContext:
      {{- $csc | nindent 6 }}
    terminationMessagePolicy: {{ .Values.terminationMessagePolicy }}
    ports:
      - name: http
        containerPort: {{ include "iam.containerPort" . }}
        protocol: TCP
    env:
      {{- include "iam.env" . | trim | nindent 6 }}
    {{- if .Values.probes.enabled }}
    {{- $p := .Values.probes }}
    # /health and /health/ready are answered from memory on the I/O threads, never queued
    # behind API requests. /health answers 200 as soon as the port is bound (also while the
    # first PostgreSQL connection is retried); /health/ready answers 503 until the service is
    # wired, while storage is unreachable and from SIGTERM on.
    startupProbe:
      httpGet:
        path: /health
        port: http
      periodSeconds: {{ $p.startup.periodSeconds }}
      timeoutSeconds: {{ $p.startup.timeoutSeconds }}
      failureThreshold: {{ $p.startup.failureThreshold }}
    livenessProbe:
      httpGet:
        path: /health
        port: http
      initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
      periodSeconds: {{ $p.liveness.periodSeconds }}
      timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
      failureThreshold: {{ $p.liveness.failureThreshold }}
    readinessProbe:
      httpGet:
        path: /health/ready
        port: http
      initialDelaySeconds: {{ $p.readiness.initialDelaySeconds }}
      periodSeconds: {{ $p.readiness.periodSeconds }}
      timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
      failureThreshold: {{ $p.readiness.failureThreshold }}
      successThreshold: {{ $p.readiness.successThreshold }}
    {{- end }}
    {{- with .Values.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    volumeMounts:
      - name: config
        mountPath: {{ include "iam.configPath" . }}
        subPath: service-config.yml
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- if include "iam.licenseSecret" . }}
      - name: license
        mountPath: /run/license
        readOnly: true
      {{- end }}
      {{- with .Values.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "iam.fullname" . }}
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- with include "iam.licenseSecret" . }}
  - name: license
    secret:
      secretName: {{ . }}
      items:
        - key: file
          path: license.p12
  {{- end }}
  {{- with .Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "iam.topologySpread" . }}
topologySpreadConstraints:
  {{- . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "iam.podSpec" -}}
{{- $spec := include "iam.podSpecBase" . | fromYaml -}}
{{- if hasKey $spec "Error" -}}
{{- fail (printf "pod spec: %s" (get $spec "Error")) -}}
{{- end -}}
{{- $extra := deepCopy (default dict .Values.extraPodSpecs) -}}
{{- range $key := list "volumes" "initContainers" "containers" "tolerations" "imagePullSecrets" "topologySpreadConstraints" -}}
{{- if hasKey $extra $key -}}
{{- $_ := set $spec $key (concat (default list (get $spec $key)) (default list (get $extra $key))) -}}
{{- $_ := unset $extra $key -}}
{{- end -}}
{{- end -}}
{{- include "iam.mergeInto" (dict "dst" $spec "src" $extra) -}}
{{- toYaml $spec -}}
{{- end -}}
