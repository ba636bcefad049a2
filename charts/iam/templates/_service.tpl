{{/*
What is particular to the IAM service (the tenant-manager chart has its own _service.tpl).
*/}}

{{/* The REST port of the binary (SERVER_PORT), named "http". */}}
{{- define "iam.containerPort" -}}8090{{- end -}}

{{/* Where the ConfigMap's service-config.yml is mounted (APP_CONFIG_PATH). */}}
{{- define "iam.configPath" -}}/srv/iam/service-config.yml{{- end -}}

{{/* The container command: empty, the image's ENTRYPOINT is the iam binary. */}}
{{- define "iam.command" -}}{{- end -}}

{{/* Prefix of the PrometheusRule's alert names. */}}
{{- define "iam.alertPrefix" -}}KaaIam{{- end -}}

{{/*
Service-specific environment, as a JSON object of name -> env body: the Tenant Manager's URL
(tenantManager.url; default the tenant-manager chart's Service in the same release), read when
multitenancy is on.
  binary default: KAA_SECURITY_MULTITENANCY_ENABLED (false; `env` turns it on)
*/}}
{{- define "iam.serviceEnv" -}}
{{- $env := dict -}}
{{- with include "iam.keycloakUrl" (dict "value" .Values.tenantManager.url "root" .) -}}
{{- $_ := set $env "KAA_SECURITY_MULTITENANCY_TENANT_MANAGER_URL" (dict "value" .) -}}
{{- end -}}
{{- $env | toJson -}}
{{- end -}}

{{/* Secrets the service reads beyond the shared ones (_helpers.tpl): none. */}}
{{- define "iam.serviceSecrets" -}}[]{{- end -}}

{{/* The service's own alerts beside the shared ones (prometheusrule.yaml): none. */}}
{{- define "iam.serviceAlerts" -}}[]{{- end -}}
