{{/*
What is particular to the Tenant Manager (the iam chart has its own _service.tpl).
*/}}

{{/* The REST port of the binary (SERVER_PORT), named "http". */}}
{{- define "tenant-manager.containerPort" -}}8091{{- end -}}

{{/* Where the ConfigMap's service-config.yml is mounted (APP_CONFIG_PATH). */}}
{{- define "tenant-manager.configPath" -}}/srv/tenant-manager/service-config.yml{{- end -}}

{{/* The container command: the image's ENTRYPOINT is the iam binary. */}}
{{- define "tenant-manager.command" -}}/usr/local/bin/tenant-manager{{- end -}}

{{/* Prefix of the PrometheusRule's alert names. */}}
{{- define "tenant-manager.alertPrefix" -}}KaaTenantManager{{- end -}}

{{- define "tenant-manager.keycloakAdminSecret" -}}
{{- include "tenant-manager.releaseName" (dict "value" .Values.global.keycloak.admin.existingSecret "root" .) -}}
{{- end -}}

{{/*
Service-specific environment, as a JSON object of name -> env body: the default Keycloak server
the Tenant Manager creates realms on (tenant-manager.keycloak.* in the configuration file) and
its admin credentials (secret keys username and password), and the key its stored secrets are
sealed with (secretKey.existingSecret, keys secret-key and the optional previous-secret-keys).
  not applicable: KAA_SECURITY_MULTITENANCY_ENABLED, KAA_SECURITY_MULTITENANCY_TENANT_MANAGER_URL
  (the Tenant Manager is the service that multitenancy is resolved against).
*/}}
{{- define "tenant-manager.serviceEnv" -}}
{{- $env := dict -}}
{{- $private := include "tenant-manager.keycloakUrl" (dict "value" .Values.global.keycloak.privateUrl "root" .) -}}
{{- $public := include "tenant-manager.keycloakUrl" (dict "value" .Values.global.keycloak.publicUrl "root" .) -}}
{{- if $private -}}
{{- $_ := set $env "KAA_KEYCLOAK_URL" (dict "value" $private) -}}
{{- end -}}
{{- if $public -}}
{{- $_ := set $env "KAA_KEYCLOAK_PUBLIC_URL" (dict "value" $public) -}}
{{- end -}}
{{- with .Values.global.keycloak.admin.realm -}}
{{- $_ := set $env "KAA_KEYCLOAK_ADMIN_REALM" (dict "value" (toString .)) -}}
{{- end -}}
{{- with include "tenant-manager.keycloakAdminSecret" . -}}
{{- $_ := set $env "KAA_KEYCLOAK_ADMIN_USERNAME" (dict "valueFrom" (dict "secretKeyRef" (dict "name" . "key" "username"))) -}}
{{- $_ := set $env "KAA_KEYCLOAK_ADMIN_PASSWORD" (dict "valueFrom" (dict "secretKeyRef" (dict "name" . "key" "password"))) -}}
{{- end -}}
{{- with include "tenant-manager.releaseName" (dict "value" .Values.secretKey.existingSecret "root" .) -}}
{{- $_ := set $env "KAA_TENANT_MANAGER_SECRET_KEY" (dict "valueFrom" (dict "secretKeyRef" (dict "name" . "key" "secret-key"))) -}}
{{- $_ := set $env "KAA_TENANT_MANAGER_PREVIOUS_SECRET_KEYS" (dict "valueFrom" (dict "secretKeyRef" (dict "name" . "key" "previous-secret-keys" "optional" true))) -}}
{{- end -}}
{{- $env | toJson -}}
{{- end -}}

{{/* Secrets the Tenant Manager reads beyond the shared ones (_helpers.tpl): its Keycloak admin
account and the key its stored secrets are sealed with. */}}
{{- define "tenant-manager.serviceSecrets" -}}
{{- list (include "tenant-manager.keycloakAdminSecret" .) (include "tenant-manager.releaseName" (dict "value" .Values.secretKey.existingSecret "root" .)) | toJson -}}
{{- end -}}

{{/*
The Tenant Manager's own alerts beside the shared ones (prometheusrule.yaml), from the gauges of
its task queue, outbox and tenants; the argument is the series selector. Runbooks in
docs/DEPLOYMENT.md.
*/}}
{{- define "tenant-manager.serviceAlerts" -}}
{{- $sel := . -}}
{{- list
  (list "TaskBacklog" "warning" "10m"
    (printf "max(service_gauge{%s, name=\"tm_tasks_oldest_due_age_seconds\"}) > 300" $sel)
    "Provisioning tasks wait for a worker"
    "A due task has waited {{ $value }} s: workers are busy, stuck or down (tenant-manager.tasks.workers).")
  (list "TasksFailing" "warning" "15m"
    (printf "max(service_gauge{%s, name=\"tm_tasks_failing\"}) > 0" $sel)
    "Provisioning tasks keep failing"
    "{{ $value }} tasks are waiting to retry after a failed attempt (Keycloak unreachable or refusing).")
  (list "TenantsFailed" "warning" "5m"
    (printf "max(service_gauge{%s, name=\"tm_tenants_failed\"}) > 0" $sel)
    "Tenants are FAILED"
    "{{ $value }} tenants are FAILED: GET /api/v1/tenants?status=FAILED shows why; POST /tenants/{id}/retry after fixing.")
  (list "OutboxStuck" "critical" "10m"
    (printf "max(service_gauge{%s, name=\"tm_outbox_oldest_pending_age_seconds\"}) > 300" $sel)
    "Tenant lifecycle events are not published"
    "The oldest unpublished event has waited {{ $value }} s: NATS is unreachable or refuses the publisher.")
  (list "StatsUnavailable" "warning" "10m"
    (printf "min(service_gauge{%s, name=\"tm_stats_up\"}) == 0" $sel)
    "Queue and outbox gauges cannot be read"
    "A replica could not read its task queue and outbox from the database at scrape time.")
  | toJson -}}
{{- end -}}
