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
Service-specific environment, as a JSON object of name -> env body.
  binary default: KAA_SECURITY_MULTITENANCY_ENABLED (false; `env` turns it on)
  binary default: KAA_SECURITY_MULTITENANCY_TENANT_MANAGER_URL (http://tenant-manager)
*/}}
{{- define "iam.serviceEnv" -}}
{{- dict | toJson -}}
{{- end -}}

{{/* The service's own alerts beside the shared ones (prometheusrule.yaml): none. */}}
{{- define "iam.serviceAlerts" -}}[]{{- end -}}
