#include "autoconfig.h"

#include <stddef.h>

#include "core/audit.h"
#include "lib/db.h"

static const char *
or_empty(const char *s)
{
	return s != NULL ? s : "";
}

int
audit_write(struct db *db, const struct audit_entry *e)
{
	const char *p[9] = {
		e->tenant_id, e->actor_key_id, or_empty(e->actor), e->action,
		or_empty(e->target_type), or_empty(e->target_id),
		or_empty(e->request_id), or_empty(e->client_addr),
		e->details != NULL ? e->details : "{}",
	};

	return db_exec(db, STMT_AUDIT_INSERT, 9, p);
}
