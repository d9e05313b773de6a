#include "autoconfig.h"

#include <stddef.h>

#include "core/models.h"
#include "lib/db.h"

struct db_res *
models_known(struct db *db)
{
	return db_query(db, STMT_MODEL_IDS, 0, NULL);
}
