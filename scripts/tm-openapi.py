#!/usr/bin/env python3
"""Writes docs/openapi/tenant-manager.json: the Tenant Manager's API (src/http/tm_api.rs, the
catalogue kinds of src/tenants/catalog.rs, the operational routes of src/app.rs).
tests/tm_openapi.rs checks the document against the router; run this again after a route
or a catalogue kind changes, then review the diff."""
import json
import os
import re

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# The catalogue kinds, read off src/tenants/catalog.rs (path, fields with type and required).
src = open(os.path.join(ROOT, "src/tenants/catalog.rs")).read()
KINDS = []
for m in re.finditer(r'kind: "([a-z-]+)",\s*path: "([a-z-]+)",\s*id: ([^\n]+),\s*fields: &\[(.*?)\],\s*refs', src, re.S):
    fields = re.findall(r'\("([a-z_]+)", (Str|Int|Bool|Object), (true|false)\)', m.group(4))
    KINDS.append((m.group(1), m.group(2), fields))
assert len(KINDS) >= 15, KINDS

TYPES = {"Str": {"type": "string"}, "Int": {"type": "integer", "minimum": 1},
         "Bool": {"type": "boolean"}, "Object": {"type": "object"}}

def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}

def json_content(schema):
    return {"application/json": {"schema": schema}}

def error(desc):
    return {"description": desc, "content": json_content(ref("Error"))}

ERRORS = {
    "400": error("invalid request: bad JSON, a bad field or a bad query parameter"),
    "401": error("authentication required (security on)"),
    "403": error("the caller lacks the scope on `kaa-system` (security on)"),
    "503": error("storage or Keycloak unavailable"),
}

def errs(*codes):
    return {c: ERRORS[c] if c in ERRORS else error({"404": "not found", "409": "conflict",
            "413": "body too large", "415": "unsupported media type"}[c]) for c in codes}

PAGING = [
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0},
     "description": "page size (default 50, 0 = all)"},
]

def id_param(schema=None):
    return {"name": "id", "in": "path", "required": True, "schema": schema or {"type": "string"}}

def op(op_id, summary, tag, responses, params=None, body=None):
    o = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": responses}
    if params:
        o["parameters"] = params
    if body:
        o["requestBody"] = {"required": True, "content": json_content(body)}
    return o

def page(item):
    return {"type": "object", "required": ["count", "results"],
            "properties": {"count": {"type": "integer", "minimum": 0},
                           "results": {"type": "array", "items": item}}}

nullable_str = {"type": "string", "nullable": True}
schemas = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}, "details": {"nullable": True}}},
    "Tenant": {"type": "object", "required": ["id", "realm_name", "status", "version"],
               "description": "A tenant. Its backend client's secret is never shown here: only the security context carries it.",
               "properties": {
                   "id": {"type": "string"}, "realm_name": {"type": "string"},
                   "display_name": nullable_str,
                   "client_frontend_id": {"type": "string"}, "client_backend_id": {"type": "string"},
                   **{k: {"type": "integer"} for k in ["realm_template_version", "realm_scopes_version",
                      "client_backend_version", "client_frontend_version", "roles_version",
                      "resources_version", "version"]},
                   "keycloak_server_id": {"type": "integer", "nullable": True},
                   "moving_to_keycloak_server_id": {"type": "integer", "nullable": True,
                                                    "description": "the server a move under way makes the realm on"},
                   "opendistro_enabled": {"type": "boolean"},
                   "subscription_type": {"type": "string"},
                   "status": {"type": "string", "enum": ["CREATING", "AVAILABLE", "UPDATING", "MOVING", "DELETING", "FAILED", "GONE"]},
                   "failure_reason": nullable_str,
                   "created": {"type": "string"}, "updated": {"type": "string"}}},
    "NewTenant": {"type": "object", "required": ["id"], "properties": {
        "id": {"type": "string"}, "realm_name": {"type": "string"}, "display_name": nullable_str,
        **{k: {"type": "integer", "minimum": 1} for k in ["realm_template_version", "client_backend_version",
           "client_frontend_version", "realm_scopes_version", "roles_version", "resources_version"]},
        "keycloak_server_id": {"type": "integer", "nullable": True},
        "opendistro_enabled": {"type": "boolean"}, "subscription_type": {"type": "string"},
        "admin": {"allOf": [ref("NewTenantAdmin")], "nullable": True}}},
    "NewTenantAdmin": {"type": "object",
                       "description": "The tenant's first administrator: a user of its realm made with the realm role `tenant-admin` once the realm is provisioned. Stored sealed until then, never shown.",
                       "required": ["username", "password"], "additionalProperties": False,
                       "properties": {
                           "username": {"type": "string", "pattern": "^[a-zA-Z0-9_@.-]{1,255}$"},
                           "email": nullable_str, "first_name": nullable_str, "last_name": nullable_str,
                           "password": {"type": "string", "minLength": 8, "maxLength": 256, "writeOnly": True},
                           "temporary_password": {"type": "boolean",
                                                  "description": "the administrator must choose another password at the first login"}}},
    "TenantChange": {"type": "object", "properties": {
        "display_name": nullable_str,
        **{k: {"type": "integer", "minimum": 1} for k in ["realm_template_version", "client_backend_version",
           "client_frontend_version", "realm_scopes_version", "roles_version", "resources_version", "version"]},
        "opendistro_enabled": {"type": "boolean"}, "subscription_type": {"type": "string"},
        "keycloak_server_id": {"type": "integer",
                               "description": "Another registered Keycloak server moves the tenant there (status MOVING until the realm is made there and the old one removed); its current server changes nothing."}}},
    "SecurityContext": {"type": "object", "required": ["tenant_id", "realm_name"], "properties": {
        "tenant_id": {"type": "string"}, "realm_name": {"type": "string"}, "status": {"type": "string"},
        "keycloak_url": {"type": "string"}, "keycloak_private_url": {"type": "string"},
        "issuer": nullable_str, "jwks_uri": nullable_str, "client_id": {"type": "string"},
        "client_secret": {"type": "string"}, "frontend_client_id": {"type": "string"}}},
    "PublicConfig": {"type": "object", "required": ["tenant_id", "realm_name"], "properties": {
        "tenant_id": {"type": "string"}, "realm_name": {"type": "string"}}},
    "Limits": {"type": "object", "required": ["tenant_id", "subscription_type", "state", "limits"],
        "description": "The limits in force now: the subscribed package type's while the subscription is in force (`ACTIVE`); before its start or after its end the configured fallback package type's (`FALLBACK`), or every limit 0 (`SUSPENDED`) without one, the subscribed package's limit names kept at 0; `NONE` without a subscription.",
        "properties": {
        "tenant_id": {"type": "string"}, "subscription_type": {"type": "string"},
        "state": {"type": "string", "enum": ["ACTIVE", "FALLBACK", "SUSPENDED", "NONE"]},
        "package_type_id": {"type": "string", "nullable": True, "description": "the package type whose limits apply"},
        "subscription": {"type": "object", "nullable": True, "properties": {
            "id": {"type": "string"}, "package_type_id": {"type": "string"},
            "subscription_type": nullable_str, "start_date": nullable_str, "end_date": nullable_str,
            "phase": {"type": "string", "enum": ["NOT_STARTED", "ACTIVE", "EXPIRED"]}}},
        "limits": {"type": "object"}}},
    "LimitCheck": {"type": "object", "required": ["limit", "current", "requested"], "properties": {
        "limit": {"type": "string", "description": "the name of one of the tenant's limits"},
        "current": {"type": "integer", "minimum": 0, "description": "how many the tenant has now"},
        "requested": {"type": "integer", "minimum": 1, "description": "how many more it asks for"}}},
    "LimitAnswer": {"type": "object", "required": ["tenant_id", "limit", "maximum", "allowed", "remaining", "state"], "properties": {
        "tenant_id": {"type": "string"}, "limit": {"type": "string"},
        "maximum": {"type": "integer", "minimum": 0}, "current": {"type": "integer", "minimum": 0},
        "requested": {"type": "integer", "minimum": 1},
        "allowed": {"type": "boolean", "description": "current + requested <= maximum"},
        "remaining": {"type": "integer", "minimum": 0, "description": "maximum - current, at least 0"},
        "state": {"type": "string", "enum": ["ACTIVE", "FALLBACK", "SUSPENDED", "NONE"]},
        "package_type_id": nullable_str}},
    "KeycloakServer": {"type": "object", "required": ["id", "url", "admin_realm", "is_default"], "properties": {
        "id": {"type": "integer"}, "url": {"type": "string"}, "admin_realm": {"type": "string"},
        "username": nullable_str, "client_id": nullable_str,
        "password_set": {"type": "boolean", "description": "whether an admin password is stored (it is never shown)"},
        "client_secret_set": {"type": "boolean", "description": "whether an admin client secret is stored (it is never shown)"},
        "is_default": {"type": "boolean"},
        "created": {"type": "string"}, "updated": {"type": "string"}}},
    "NewKeycloakServer": {"type": "object", "required": ["id", "url"], "additionalProperties": False, "properties": {
        "id": {"type": "integer", "minimum": 1}, "url": {"type": "string", "pattern": "^https?://"},
        "admin_realm": {"type": "string"}, "username": {"type": "string"},
        "password": {"type": "string", "writeOnly": True},
        "client_id": {"type": "string"}, "client_secret": {"type": "string", "writeOnly": True},
        "is_default": {"type": "boolean"}}},
    "KeycloakServerChange": {"type": "object", "required": ["url"], "additionalProperties": False,
        "properties": {
            "id": {"type": "integer", "minimum": 1}, "url": {"type": "string", "pattern": "^https?://"},
            "admin_realm": {"type": "string"}, "username": nullable_str,
            "password": {"type": "string", "nullable": True, "writeOnly": True},
            "client_id": nullable_str,
            "client_secret": {"type": "string", "nullable": True, "writeOnly": True},
            "is_default": {"type": "boolean"},
            "password_set": {"type": "boolean", "readOnly": True},
            "client_secret_set": {"type": "boolean", "readOnly": True},
            "created": {"type": "string", "readOnly": True},
            "updated": {"type": "string", "readOnly": True}},
        "description": "A Keycloak server's whole record. `password` and `client_secret` that are not sent are kept (GET never shows them, so a read-modify-write keeps the credentials); `null` clears one. The read-only fields GET shows are accepted and ignored."},
    "TenantUser": {"type": "object", "required": ["id", "tenant_id", "username", "enabled", "roles"],
                   "properties": {
                       "id": {"type": "string"}, "tenant_id": {"type": "string"},
                       "username": {"type": "string"}, "email": nullable_str,
                       "first_name": nullable_str, "last_name": nullable_str,
                       "enabled": {"type": "boolean"},
                       "roles": {"type": "array", "items": {"type": "string"}},
                       "created": {"type": "string"}}},
    "NewTenantUser": {"type": "object", "required": ["username", "password"], "additionalProperties": False,
                      "properties": {
                          "username": {"type": "string", "pattern": "^[a-zA-Z0-9_@.-]{1,255}$"},
                          "email": nullable_str, "first_name": nullable_str, "last_name": nullable_str,
                          "enabled": {"type": "boolean"},
                          "password": {"type": "string", "minLength": 8, "maxLength": 256, "writeOnly": True},
                          "temporary_password": {"type": "boolean"},
                          "roles": {"type": "array", "items": {"type": "string"}}}},
    "TenantUserChange": {"type": "object", "additionalProperties": False,
                         "properties": {
                             "email": nullable_str, "first_name": nullable_str, "last_name": nullable_str,
                             "enabled": {"type": "boolean"},
                             "password": {"type": "string", "minLength": 8, "maxLength": 256, "writeOnly": True},
                             "temporary_password": {"type": "boolean"},
                             "roles": {"type": "array", "items": {"type": "string"}}}},
    "Health": {"type": "object", "required": ["status", "service"], "properties": {
        "status": {"type": "string"}, "service": {"type": "string"}}},
}

paths = {
    "/health": {"get": op("health", "liveness and license state", "operations",
                          {"200": {"description": "up", "content": json_content(ref("Health"))}})},
    "/health/ready": {"get": op("ready", "readiness (storage reachable)", "operations",
                                {"200": {"description": "ready", "content": json_content({"type": "object"})},
                                 "503": ERRORS["503"]})},
    "/metrics": {"get": op("metrics", "Prometheus metrics", "operations",
                           {"200": {"description": "text exposition format",
                                    "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    "/api/v1/openapi.json": {"get": op("openapi", "this document", "operations",
                                       {"200": {"description": "OpenAPI 3", "content": json_content({"type": "object"})}})},
    "/api/v1/tenants": {
        "get": op("listTenants", "list tenants", "tenants",
                  {"200": {"description": "a page", "content": json_content(page(ref("Tenant")))}, **errs("400", "401", "403", "503")},
                  PAGING + [{"name": n, "in": "query", "schema": {"type": "string"}}
                            for n in ["realm_name", "status", "opendistro_enabled", "subscription_type"]]),
        "post": op("createTenant", "create a tenant (provisioned in the background)", "tenants",
                   {"202": {"description": "accepted, CREATING", "content": json_content(ref("Tenant")),
                            "headers": {"Location": {"schema": {"type": "string"}}}},
                    **errs("400", "401", "403", "409", "413", "415", "503")}, body=ref("NewTenant")),
    },
    "/api/v1/tenants/{id}": {
        "get": op("getTenant", "a tenant", "tenants",
                  {"200": {"description": "the tenant", "content": json_content(ref("Tenant"))}, **errs("401", "403", "404", "503")},
                  [id_param()]),
        "put": op("updateTenant", "change a tenant", "tenants",
                  {"200": {"description": "changed", "content": json_content(ref("Tenant"))},
                   "202": {"description": "changed, realm update under way", "content": json_content(ref("Tenant"))},
                   **errs("400", "401", "403", "404", "409", "413", "415", "503")}, [id_param()], ref("TenantChange")),
        "patch": op("patchTenant", "change a tenant", "tenants",
                    {"200": {"description": "changed", "content": json_content(ref("Tenant"))},
                     "202": {"description": "changed, realm update under way", "content": json_content(ref("Tenant"))},
                     **errs("400", "401", "403", "404", "409", "413", "415", "503")}, [id_param()], ref("TenantChange")),
        "delete": op("deleteTenant", "delete a tenant and its realm", "tenants",
                     {"202": {"description": "accepted, DELETING", "content": json_content(ref("Tenant"))},
                      **errs("401", "403", "404", "409", "503")}, [id_param()]),
    },
    "/api/v1/tenants/{id}/retry": {"post": op("retryTenant", "retry a FAILED tenant", "tenants",
        {"202": {"description": "retrying", "content": json_content(ref("Tenant"))}, **errs("401", "403", "404", "409", "503")},
        [id_param()])},
    "/api/v1/tenants/{id}/security-context": {"get": op("securityContext", "issuer and backend client of a tenant", "tenants",
        {"200": {"description": "the context", "content": json_content(ref("SecurityContext"))}, **errs("401", "403", "404", "503")},
        [id_param()])},
    "/api/v1/tenants/{id}/public-config": {"get": op("publicConfig", "what a front end needs to log in (no authentication)", "tenants",
        {"200": {"description": "the configuration", "content": json_content(ref("PublicConfig"))}, **errs("404", "503")},
        [id_param()])},
    "/api/v1/tenants/{id}/limits": {"get": op("tenantLimits", "the limits of a tenant's package", "tenants",
        {"200": {"description": "the limits", "content": json_content(ref("Limits"))}, **errs("401", "403", "404", "503")},
        [id_param()])},
    "/api/v1/tenants/{id}/limits/check": {"post": op("checkTenantLimit", "may the tenant have `requested` more of a limit's things (scope `kaa:tenant:read`)", "tenants",
        {"200": {"description": "the answer, allowed or not", "content": json_content(ref("LimitAnswer"))},
         **errs("400", "401", "403", "404", "413", "415", "503")},
        [id_param()], ref("LimitCheck"))},
    "/api/v1/tenants/{id}/users": {
        "get": op("listTenantUsers", "the users of a tenant's realm", "tenant-users",
                  {"200": {"description": "a page", "content": json_content(page(ref("TenantUser")))},
                   **errs("400", "401", "403", "404", "409", "503")},
                  [id_param()] + PAGING + [{"name": "username", "in": "query", "schema": {"type": "string"}}]),
        "post": op("createTenantUser", "create a user in a tenant's realm", "tenant-users",
                   {"201": {"description": "created", "content": json_content(ref("TenantUser")),
                            "headers": {"Location": {"schema": {"type": "string"}}}},
                    **errs("400", "401", "403", "404", "409", "413", "415", "503")}, [id_param()], ref("NewTenantUser")),
    },
    "/api/v1/tenants/{id}/users/{user_id}": {
        m: op(f"{m}TenantUser" if m != "get" else "getTenantUser", f"{m} a tenant user", "tenant-users",
              {"204": {"description": "deleted"}} if m == "delete" else
              {"200": {"description": "the user", "content": json_content(ref("TenantUser"))}}
              | errs(*(["401", "403", "404", "409", "503"] if m in ("get", "delete")
                       else ["400", "401", "403", "404", "409", "413", "415", "503"])),
              [id_param(), {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}],
              ref("TenantUserChange") if m in ("put", "patch") else None)
        for m in ["get", "put", "patch", "delete"]
    },
    "/api/v1/keycloak-servers": {
        "get": op("listKeycloakServers", "list Keycloak servers", "keycloak-servers",
                  {"200": {"description": "a page", "content": json_content(page(ref("KeycloakServer")))}, **errs("400", "401", "403", "503")},
                  PAGING),
        "post": op("createKeycloakServer", "add a Keycloak server", "keycloak-servers",
                   {"201": {"description": "added", "content": json_content(ref("KeycloakServer"))},
                    **errs("400", "401", "403", "409", "413", "415", "503")}, body=ref("NewKeycloakServer")),
    },
    "/api/v1/keycloak-servers/{id}": {
        "get": op("getKeycloakServer", "a Keycloak server", "keycloak-servers",
                  {"200": {"description": "the server", "content": json_content(ref("KeycloakServer"))}, **errs("401", "403", "404", "503")},
                  [id_param()]),
        "put": op("updateKeycloakServer", "change a Keycloak server", "keycloak-servers",
                  {"200": {"description": "changed", "content": json_content(ref("KeycloakServer"))},
                   **errs("400", "401", "403", "404", "409", "413", "415", "503")}, [id_param()], ref("KeycloakServerChange")),
        "delete": op("deleteKeycloakServer", "remove a Keycloak server", "keycloak-servers",
                     {"204": {"description": "removed"}, **errs("401", "403", "404", "409", "503")}, [id_param()]),
    },
}

schemas["AuditRecord"] = {
    "type": "object",
    "required": ["service", "id", "time", "tenant_id", "principal", "action", "entity", "fields", "detail"],
    "description": "One committed change, written in the transaction of the change (a write that fails leaves "
                   "none). The NATS feed (`tenant-manager.audit.publish`) sends the same object. Never a secret: "
                   "a Keycloak server's password or client secret, a tenant user's password, an IDP's config are "
                   "named in `fields`, never shown.",
    "properties": {
        "service": {"type": "string", "enum": ["tenant-manager"]},
        "id": {"type": "integer", "description": "the record's number, increasing"},
        "time": {"type": "string", "format": "date-time"},
        "tenant_id": {"type": "string", "description": "the tenant the changed entity belongs to; the system "
                      "tenant for Keycloak servers and the shared catalogue"},
        "principal": {"type": "string", "description": "the caller's KRN (`krn:iam:<tenant>::user/<username>`), else "
                      "its token subject; `anonymous` with security off; `service` for the Tenant Manager's own "
                      "writes (bootstrap, the provisioning worker)"},
        "subject": nullable_str, "caller_tenant_id": nullable_str, "request_id": nullable_str,
        "source": {"type": "string", "nullable": True, "description": "the client's address and port"},
        "action": {"type": "string", "description": "`kaa:tenant:create|update|move|retry|delete|remove`, "
                   "`kaa:tenant:<catalogue kind>:create|update|delete`, `kaa:tenant:keycloak-server:...`, "
                   "`kaa:tenant:tenant-user:...`"},
        "entity": {"type": "string", "description": "`tenant/<id>`, `keycloak-server/<id>`, `<catalogue kind>/<id>`, "
                   "`tenant-user/<tenant>/<user id>`"},
        "version_before": {"type": "integer", "nullable": True, "description": "a tenant's version before (null: "
                           "created, or an entity without versions)"},
        "version_after": {"type": "integer", "nullable": True},
        "fields": {"type": "array", "items": {"type": "string"}, "description": "names of the fields changed (a "
                   "create: those set)"},
        "detail": {"type": "object", "description": "a tenant's changed plain fields as {before, after}; a tenant "
                   "user's username; what a catalogue write did to its tenant"},
    },
}
paths["/api/v1/audit"] = {
    "get": op("listAudit", "the audit trail, newest first", "audit",
              {"200": {"description": "a page; `next` is the cursor of the following one (null on the last)",
                       "content": json_content({"type": "object", "required": ["results", "next"], "properties": {
                           "results": {"type": "array", "items": ref("AuditRecord")},
                           "next": nullable_str}})},
               **errs("400", "401", "403", "503")},
              [{"name": "tenant_id", "in": "query", "schema": {"type": "string"},
                "description": "one tenant's trail (a tenant's administrator: its own only, another is a 403)"},
               {"name": "entity", "in": "query", "schema": {"type": "string"}},
               {"name": "principal", "in": "query", "schema": {"type": "string"},
                "description": "the principal KRN or the token subject"},
               {"name": "action", "in": "query", "schema": {"type": "string"}},
               {"name": "from", "in": "query", "schema": {"type": "string"},
                "description": "RFC 3339 date-time or date, inclusive"},
               {"name": "to", "in": "query", "schema": {"type": "string"},
                "description": "RFC 3339 date-time or date, exclusive"},
               {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1},
                "description": "page size (default 50, at most `server.maxPageSize`)"},
               {"name": "next", "in": "query", "schema": {"type": "string"},
                "description": "the cursor the previous page answered"}]),
}
paths["/api/v1/audit"]["get"]["description"] = (
    "With security on: a token of the system realm with the scope `kaa:tenant:audit:read` on `kaa-system` "
    "reads every tenant's trail; a token of a tenant's own realm with the scope `tenant:audit:read` on its "
    "`tenant-system` resource (the `tenant-admin` role has it) reads only that tenant's.")

def camel(s):
    parts = s.split("-")
    return "".join(p[:1].upper() + p[1:] for p in parts)

for kind, path, fields in KINDS:
    name = camel(kind)
    # Optional fields may be sent and come back as null.
    props = {f: dict(TYPES[t], **({} if r == "true" else {"nullable": True})) for f, t, r in fields}
    required = [f for f, _, r in fields if r == "true"]
    if kind == "tenant-subscription":
        for f in ("start_date", "end_date"):
            props[f]["description"] = ("`2026-12-07` (midnight UTC) or an RFC 3339 date-time; the subscription is in force "
                                       "from `start_date` up to `end_date` (which must be later)")
        props["subscription_type"]["description"] = ("the tenant's `subscription_type`, kept equal to it (a subscription "
                                                     "without one takes the tenant's); a tenant has one subscription (409 for a second)")
    schemas[f"New{name}"] = {"type": "object", "required": required, "properties": props}
    schemas[name] = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, **props}}
    list_params = list(PAGING)
    if any(f == "tenant_id" for f, _, _ in fields):
        list_params.append({"name": "tenant_id", "in": "query", "schema": {"type": "string"}})
    paths[f"/api/v1/{path}"] = {
        "get": op(f"list{name}s", f"list {kind} entries", "catalogue",
                  {"200": {"description": "a page", "content": json_content(page(ref(name)))}, **errs("400", "401", "403", "503")},
                  list_params),
        "post": op(f"create{name}", f"add a {kind}", "catalogue",
                   {"201": {"description": "added", "content": json_content(ref(name))},
                    **errs("400", "401", "403", "404", "409", "413", "415", "503")}, body=ref(f"New{name}")),
    }
    paths[f"/api/v1/{path}/{{id}}"] = {
        "get": op(f"get{name}", f"a {kind}", "catalogue",
                  {"200": {"description": "the entry", "content": json_content(ref(name))}, **errs("401", "403", "404", "503")},
                  [id_param()]),
        "put": op(f"update{name}", f"change a {kind}", "catalogue",
                  {"200": {"description": "changed", "content": json_content(ref(name))},
                   **errs("400", "401", "403", "404", "409", "413", "415", "503")}, [id_param()], ref(f"New{name}")),
        "delete": op(f"delete{name}", f"remove a {kind}", "catalogue",
                     {"204": {"description": "removed"}, **errs("401", "403", "404", "409", "503")}, [id_param()]),
    }

# A tenant's IDPs, also under the tenant (the alias in the path).
alias_param = {"name": "alias", "in": "path", "required": True, "schema": {"type": "string"}}
paths["/api/v1/tenants/{id}/idps"] = {
    "get": op("listTenantIdps", "the IDPs of a tenant", "catalogue",
              {"200": {"description": "a page", "content": json_content(page(ref("Idp")))},
               **errs("400", "401", "403", "404", "503")}, [id_param()] + PAGING),
    "post": op("createTenantIdp", "add an IDP to a tenant (tenant_id from the path)", "catalogue",
               {"201": {"description": "added", "content": json_content(ref("Idp"))},
                **errs("400", "401", "403", "404", "409", "413", "415", "503")}, [id_param()],
               {"type": "object", "required": ["alias", "provider_id"], "properties": schemas["NewIdp"]["properties"]}),
}
paths["/api/v1/tenants/{id}/idps/{alias}"] = {
    "get": op("getTenantIdp", "an IDP of a tenant", "catalogue",
              {"200": {"description": "the IDP", "content": json_content(ref("Idp"))}, **errs("401", "403", "404", "503")},
              [id_param(), alias_param]),
    "put": op("updateTenantIdp", "change an IDP of a tenant", "catalogue",
              {"200": {"description": "changed", "content": json_content(ref("Idp"))},
               **errs("400", "401", "403", "404", "409", "413", "415", "503")}, [id_param(), alias_param],
              {"type": "object", "required": ["provider_id"], "properties": schemas["NewIdp"]["properties"]}),
    "delete": op("deleteTenantIdp", "remove an IDP of a tenant", "catalogue",
                 {"204": {"description": "removed"}, **errs("401", "403", "404", "409", "503")},
                 [id_param(), alias_param]),
}

doc = {
    "openapi": "3.0.3",
    "info": {"title": "Kaa Tenant Manager", "version": "1.0.0",
             "description": "Tenants as Keycloak realms, the catalogue of templates, scopes, roles, "
                            "resources, packages, subscriptions and IDPs, and Keycloak servers. "
                            "Snake_case JSON; lists as {count, results}; errors as {error, details}."},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "tags": [{"name": t} for t in ["tenants", "tenant-users", "catalogue", "keycloak-servers", "audit", "operations"]],
    "paths": paths,
    "components": {"schemas": schemas,
                   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
}
for p in ["/health", "/health/ready", "/metrics", "/api/v1/openapi.json", "/api/v1/tenants/{id}/public-config"]:
    for o in paths[p].values():
        o["security"] = []
out = os.path.join(ROOT, "docs/openapi/tenant-manager.json")
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"wrote {out}: {len(paths)} paths, {sum(len(v) for v in paths.values())} operations")
