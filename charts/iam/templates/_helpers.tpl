{{/*
Shared helpers. charts/iam and charts/tenant-manager carry the same templates, each with its own
define prefix (the chart's name), so that both can be subcharts of one umbrella chart; what
differs between the two services is in _service.tpl. scripts/check-charts.sh keeps them equal.
*/}}

{{- define "iam.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "iam.fullname" -}}
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

{{- define "iam.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "iam.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of the `helm test` pod: not the Service's selector (it must get no traffic). */}}
{{- define "iam.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "iam.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
{{- end -}}

{{- define "iam.labels" -}}
helm.sh/chart: {{ include "iam.chart" . }}
{{ include "iam.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.metadata.component }}
app.kubernetes.io/component: {{ . | quote }}
{{- end }}
{{- with .Values.metadata.partOf }}
app.kubernetes.io/part-of: {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
A name template of the published defaults: a value starting with "-" is appended to the release
name ("-keycloak-backend" -> "<release>-keycloak-backend"); other values are used as they are.
Call with (dict "value" VALUE "root" $).
*/}}
{{- define "iam.releaseName" -}}
{{- $v := toString (default "" .value) | trim -}}
{{- if hasPrefix "-" $v -}}
{{- printf "%s%s" .root.Release.Name $v -}}
{{- else -}}
{{- $v -}}
{{- end -}}
{{- end -}}

{{/* A Keycloak base URL: name template resolved, "http://" added without a scheme, no final "/". */}}
{{- define "iam.keycloakUrl" -}}
{{- $v := include "iam.releaseName" . -}}
{{- if and $v (not (regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://" $v)) -}}
{{- $v = printf "http://%s" $v -}}
{{- end -}}
{{- trimSuffix "/" $v -}}
{{- end -}}

{{/* The issuer of the system tenant's realm "kaa" under a Keycloak base URL. */}}
{{- define "iam.issuer" -}}
{{- $u := include "iam.keycloakUrl" . -}}
{{- if $u -}}{{- printf "%s/realms/kaa" $u -}}{{- end -}}
{{- end -}}

{{- define "iam.image" -}}
{{- $repo := default "kaa-iam" .Values.image.repository -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- printf "%s:%s" $repo (toString $tag) -}}
{{- end -}}

{{- define "iam.pullSecrets" -}}
{{- $secrets := .Values.image.pullSecrets -}}
{{- if not $secrets -}}{{- $secrets = .Values.global.image.pullSecrets -}}{{- end -}}
{{- with $secrets -}}
imagePullSecrets:
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{- define "iam.licenseSecret" -}}
{{- include "iam.releaseName" (dict "value" .Values.global.license.existingSecret "root" .) -}}
{{- end -}}

{{- define "iam.keycloakBackendSecret" -}}
{{- include "iam.releaseName" (dict "value" .Values.global.keycloak.backend.existingSecret "root" .) -}}
{{- end -}}

{{/* The Service name of the bundled Bitnami PostgreSQL (its common.names.fullname). */}}
{{- define "iam.postgresql.fullname" -}}
{{- $pg := .Values.postgresql -}}
{{- if $pg.fullnameOverride -}}
{{- $pg.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "postgresql" $pg.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Secret this chart creates for the password of postgresql.url. */}}
{{- define "iam.postgresql.urlSecret" -}}
{{- printf "%s-external-postgresql" (include "iam.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The PostgreSQL connection as JSON: host, port, database, username, password (only from
postgresql.url), sslmode (only from postgresql.url's query). The bundled server when
postgresql.enabled, else postgresql.url, which must then be set.
*/}}
{{- define "iam.postgresql.connection" -}}
{{- $pg := .Values.postgresql -}}
{{- if $pg.enabled -}}
{{- dict "host" (include "iam.postgresql.fullname" .) "port" (toString (default 5432 $pg.service.port)) "database" $pg.postgresqlDatabase "username" $pg.postgresqlUsername "password" "" "sslmode" "" | toJson -}}
{{- else -}}
{{- $url := toString (default "" $pg.url) | trim -}}
{{- if or (eq $url "") (eq $url "-") -}}
{{- fail "postgresql.url must name the external server (postgres://user:password@host:5432/database) when postgresql.enabled is false" -}}
{{- end -}}
{{- $u := urlParse $url -}}
{{- if not (has $u.scheme (list "postgres" "postgresql")) -}}
{{- fail (printf "postgresql.url must start with postgres:// or postgresql://, got %q" $url) -}}
{{- end -}}
{{- $host := regexReplaceAll ":[0-9]+$" $u.host "" | trimPrefix "[" | trimSuffix "]" -}}
{{- if not $host -}}
{{- fail (printf "postgresql.url names no host: %q" $url) -}}
{{- end -}}
{{- $port := regexFind ":[0-9]+$" $u.host | trimPrefix ":" | default "5432" -}}
{{- $user := $pg.postgresqlUsername -}}
{{- $password := "" -}}
{{- if $u.userinfo -}}
{{- $parts := splitn ":" 2 $u.userinfo -}}
{{- $user = default $user $parts._0 -}}
{{- $password = default "" $parts._1 -}}
{{- end -}}
{{- if or (contains "%" $user) (contains "%" $password) -}}
{{- fail "postgresql.url: percent-encoded user or password: put the password into a secret and name it in global.postgresql.existingSecret (key postgresql-password)" -}}
{{- end -}}
{{- $database := trimPrefix "/" (default "" $u.path) | default $pg.postgresqlDatabase -}}
{{- $sslmode := regexFind "(^|&)sslmode=[^&]*" (default "" $u.query) | trimPrefix "&" | trimPrefix "sslmode=" -}}
{{- dict "host" $host "port" $port "database" $database "username" $user "password" $password "sslmode" $sslmode | toJson -}}
{{- end -}}
{{- end -}}

{{/* Reference to the PostgreSQL password: secretKeyRef body as JSON, or "{}" when none. */}}
{{- define "iam.postgresql.passwordRef" -}}
{{- $pg := .Values.postgresql -}}
{{- $conn := include "iam.postgresql.connection" . | fromJson -}}
{{- if .Values.global.postgresql.existingSecret -}}
{{- dict "name" (tpl .Values.global.postgresql.existingSecret .) "key" "postgresql-password" | toJson -}}
{{- else if and $pg.enabled $pg.existingSecret -}}
{{- dict "name" (tpl $pg.existingSecret .) "key" "postgresql-password" | toJson -}}
{{- else if $pg.enabled -}}
{{- dict "name" (include "iam.postgresql.fullname" .) "key" "postgresql-password" | toJson -}}
{{- else if $conn.password -}}
{{- dict "name" (include "iam.postgresql.urlSecret" .) "key" "postgresql-password" | toJson -}}
{{- else -}}
{{- dict | toJson -}}
{{- end -}}
{{- end -}}

{{/*
Names of the Secrets the pod reads (license, Keycloak client, PostgreSQL password and the
service's own, _service.tpl), as a JSON list.
*/}}
{{- define "iam.referencedSecrets" -}}
{{- $names := list (include "iam.licenseSecret" .) (include "iam.keycloakBackendSecret" .) -}}
{{- $pw := include "iam.postgresql.passwordRef" . | fromJson -}}
{{- $names = append $names (default "" $pw.name) -}}
{{- $names = concat $names (include "iam.serviceSecrets" . | fromJsonArray) -}}
{{- without (uniq $names) "" | toJson -}}
{{- end -}}

{{/*
Checksum of every Secret the pod reads, for the pod template: the Secrets this chart renders,
and the data of those it names as found in the cluster at install or upgrade (`lookup`; nothing
under `helm template`), so that `helm upgrade` after a Secret changed rolls the pods.
*/}}
{{- define "iam.secretsChecksum" -}}
{{- $found := list -}}
{{- range $name := include "iam.referencedSecrets" . | fromJsonArray -}}
{{- $s := lookup "v1" "Secret" $.Release.Namespace $name -}}
{{- $found = append $found (dict "name" $name "data" (default dict $s.data)) -}}
{{- end -}}
{{- $own := list (include (print $.Template.BasePath "/secret-postgresql.yaml") .) (include (print $.Template.BasePath "/secret-postgresql-password.yaml") .) -}}
{{- printf "%s\n%s" (toJson $found) (join "\n---\n" $own) | sha256sum -}}
{{- end -}}

{{/*
The service container's environment, as a list. Chart-managed variables first, then
.Values.env over them by name; sorted by name.
*/}}
{{- define "iam.env" -}}
{{- $env := dict -}}
{{- $conn := include "iam.postgresql.connection" . | fromJson -}}
{{- $_ := set $env "APP_CONFIG_PATH" (dict "value" (include "iam.configPath" .)) -}}
{{- $_ := set $env "SERVER_PORT" (dict "value" (include "iam.containerPort" .)) -}}
{{- $_ := set $env "SERVICE_INSTANCE_REPLICA_ID" (dict "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name"))) -}}
{{- /* PostgreSQL: the bundled server's Service, or postgresql.url. */ -}}
{{- $_ := set $env "KAA_POSTGRESQL_HOST" (dict "value" $conn.host) -}}
{{- $_ := set $env "KAA_POSTGRESQL_PORT" (dict "value" $conn.port) -}}
{{- $_ := set $env "KAA_POSTGRESQL_DATABASE" (dict "value" $conn.database) -}}
{{- $_ := set $env "KAA_POSTGRESQL_USERNAME" (dict "value" $conn.username) -}}
{{- $pw := include "iam.postgresql.passwordRef" . | fromJson -}}
{{- if $pw -}}
{{- $_ := set $env "KAA_POSTGRESQL_PASSWORD" (dict "valueFrom" (dict "secretKeyRef" $pw)) -}}
{{- end -}}
{{- if $conn.sslmode -}}
{{- $_ := set $env "KAA_POSTGRESQL_SSL_MODE" (dict "value" $conn.sslmode) -}}
{{- end -}}
{{- /* Keycloak: the system tenant's realm "kaa" and the backend client. */ -}}
{{- $_ := set $env "KAA_SECURITY_ENABLED" (dict "value" "true") -}}
{{- $public := include "iam.issuer" (dict "value" .Values.global.keycloak.publicUrl "root" .) -}}
{{- $private := include "iam.issuer" (dict "value" .Values.global.keycloak.privateUrl "root" .) -}}
{{- if $public -}}
{{- $_ := set $env "KAA_SECURITY_ISSUER_PUBLIC_URL" (dict "value" $public) -}}
{{- end -}}
{{- if $private -}}
{{- $_ := set $env "KAA_SECURITY_ISSUER_PRIVATE_URL" (dict "value" $private) -}}
{{- end -}}
{{- with include "iam.keycloakBackendSecret" . -}}
{{- $_ := set $env "KAA_SECURITY_CLIENT_ID" (dict "valueFrom" (dict "secretKeyRef" (dict "name" . "key" "client-id"))) -}}
{{- $_ := set $env "KAA_SECURITY_CLIENT_SECRET" (dict "valueFrom" (dict "secretKeyRef" (dict "name" . "key" "client-secret"))) -}}
{{- end -}}
{{- /* License: the file is mounted at KAA_LICENSE_CERT_PATH. */ -}}
{{- with include "iam.licenseSecret" . -}}
{{- $_ := set $env "KAA_LICENSE_CERT_PATH" (dict "value" "/run/license/license.p12") -}}
{{- $_ := set $env "KAA_LICENSE_CERT_PASSWORD" (dict "valueFrom" (dict "secretKeyRef" (dict "name" . "key" "password"))) -}}
{{- $_ := set $env "KAA_LICENSE_REQUIRED" (dict "value" "true") -}}
{{- end -}}
{{- with .Values.global.nats.url -}}
{{- $_ := set $env "KAA_NATS_URLS" (dict "value" (toString .)) -}}
{{- end -}}
{{- /* Start and stop: the wait for PostgreSQL, the serving window after SIGTERM, the drain. */ -}}
{{- $_ := set $env "KAA_POSTGRESQL_STARTUP_WAIT" (dict "value" (toString (ternary .Values.waitContainers.timeout 0 .Values.waitContainers.enabled))) -}}
{{- $_ := set $env "SERVICE_SHUTDOWN_DELAY" (dict "value" (toString .Values.lifecycle.shutdownDelaySeconds)) -}}
{{- $_ := set $env "SERVICE_GRACEFUL_SHUTDOWN" (dict "value" (toString .Values.lifecycle.drainSeconds)) -}}
{{- /* What differs per service (_service.tpl). */ -}}
{{- $env = merge (include "iam.serviceEnv" . | fromJson) $env -}}
{{- /*
  Left to the binary's default (README.md, "Configuration"); set them with `env` or `config`:
  binary default: KAA_POSTGRESQL_SSL_MODE (disable) unless postgresql.url has ?sslmode=
  binary default: KAA_POSTGRESQL_MAX_OPEN_CONNECTIONS (100 per replica)
  binary default: SERVICE_DEBUG (false)
*/ -}}
{{- range $name, $value := .Values.env -}}
{{- if kindIs "map" $value -}}
{{- $_ := set $env $name $value -}}
{{- else -}}
{{- $_ := set $env $name (dict "value" (toString $value)) -}}
{{- end -}}
{{- end -}}
{{- range $name, $body := $env }}
- name: {{ $name }}
{{- if hasKey $body "value" }}
  value: {{ toString $body.value | quote }}
{{- end }}
{{- with omit $body "value" }}
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}
{{- end -}}
