#include "autoconfig.h"

#include <stddef.h>

#include "api/api.h"

/*
 * Every route keygate answers, in SPEC order, with the scope it needs.  A
 * path that matches no row is 404; a path that matches with another method
 * is 405 with Allow.  Literal rows come before {id} rows they overlap.
 * An empty scope means "any valid key"; NULL means no key at all.
 */
const struct route api_routes[] = {
	{ METHOD_GET, "/health", api_health, NULL, 0 },
	{ METHOD_POST, "/v1/api_keys", api_keys_create, "api_keys:write", 0 },
	{ METHOD_GET, "/v1/api_keys", api_keys_list, "api_keys:read", 0 },
	{ METHOD_GET, "/v1/api_keys/dormant", api_keys_dormant,
	  "api_keys:read", 0 },
	{ METHOD_GET, "/v1/api_keys/{id}", api_keys_get, "api_keys:read", 0 },
	{ METHOD_PATCH, "/v1/api_keys/{id}", api_keys_update,
	  "api_keys:write", 0 },
	{ METHOD_DELETE, "/v1/api_keys/{id}", api_keys_revoke,
	  "api_keys:write", 0 },
	{ METHOD_POST, "/v1/api_keys/{id}/rotate", api_keys_rotate,
	  "api_keys:write", 0 },
	{ METHOD_PUT, "/v1/api_keys/{id}/role", api_keys_role_put,
	  "api_keys:write", 0 },
	{ METHOD_DELETE, "/v1/api_keys/{id}/role", api_keys_role_delete,
	  "api_keys:write", 0 },
	{ METHOD_GET, "/v1/auth/whoami", api_auth_whoami, "", 0 },
	{ METHOD_POST, "/v1/keys/verify", api_keys_verify, "keys:verify", 0 },
	{ METHOD_POST, "/v1/roles", api_roles_create, "roles:write", 0 },
	{ METHOD_GET, "/v1/roles", api_roles_list, "roles:read", 0 },
	{ METHOD_GET, "/v1/roles/{id}", api_roles_get, "roles:read", 0 },
	{ METHOD_PATCH, "/v1/roles/{id}", api_roles_update, "roles:write", 0 },
	{ METHOD_DELETE, "/v1/roles/{id}", api_roles_delete, "roles:write", 0 },
	{ METHOD_POST, "/v1/tenants", api_tenants_create, "tenants:write", 0 },
	{ METHOD_GET, "/v1/tenants", api_tenants_list, "tenants:read", 0 },
	{ METHOD_GET, "/v1/tenants/{id}", api_tenants_get, "tenants:read", 0 },
	{ METHOD_PATCH, "/v1/tenants/{id}", api_tenants_update,
	  "tenants:write", 0 },
	{ METHOD_DELETE, "/v1/tenants/{id}", api_tenants_delete,
	  "tenants:write", 0 },
	{ METHOD_GET, "/v1/tenants/{id}/export", api_tenants_export,
	  "tenants:admin", 0 },
	{ METHOD_POST, "/v1/tenants/{id}/purge", api_tenants_purge,
	  "tenants:admin", 0 },
	{ METHOD_POST, "/v1/tenants/{id}/credits", api_tenants_credits,
	  "tenants:admin", 0 },
	{ METHOD_GET, "/v1/account", api_account, "account:read", 0 },
	{ METHOD_GET, "/v1/account/usage", api_account_usage, "account:read",
	  0 },
	{ METHOD_POST, "/v1/account/llm-keys", api_llm_keys_store,
	  "llm_keys:write", ROUTE_VAULT },
	{ METHOD_GET, "/v1/account/llm-keys", api_llm_keys_status,
	  "llm_keys:read", ROUTE_VAULT },
	{ METHOD_DELETE, "/v1/account/llm-keys", api_llm_keys_delete,
	  "llm_keys:write", ROUTE_VAULT },
	{ METHOD_GET, "/v1/models", api_models, "models:read", 0 },
	{ METHOD_GET, "/v1/models/{id+}", api_models_get, "models:read", 0 },
	{ METHOD_POST, "/v1/chat/completions", api_chat_completions,
	  "chat:write", 0 },
	{ METHOD_POST, "/v1/messages", api_messages, "chat:write", 0 },
	{ METHOD_POST, "/v1/embeddings", api_embeddings, "embeddings:write",
	  0 },
	{ METHOD_GET, "/v1/audit_logs", api_audit_list, "audit:read", 0 },
	{ METHOD_POST, "/v1/maintenance/reencrypt", api_maintenance_reencrypt,
	  "maintenance:write", ROUTE_VAULT },
};

const size_t api_nroutes = sizeof(api_routes) / sizeof(api_routes[0]);
