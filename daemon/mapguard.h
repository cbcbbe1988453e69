/* mapguard — keeps a file mapping that shrinks under the daemon (the model file truncated,
 * or rewritten in place, while it is being served) from killing the process with SIGBUS.
 *
 * A read of a mapped page that now lies past the file's end raises SIGBUS in whichever
 * thread made it: the worker, a thread-pool worker, a connection thread tokenizing. The
 * handler, installed once for the process, looks for a guarded range holding the faulting
 * address; if there is one it maps a page of zeros over the missing one (MAP_FIXED, so the
 * faulting instruction reads zeros when it is restarted) and counts the fault against that
 * range. Any other SIGBUS gets the default action back and happens again (a signal sent by
 * kill is raised again): a real bug still dies with a core.
 * What read the zeros computed garbage, never a crash; the owner learns of it through
 * mapguard_faults and fails the request and the model with a clear error (daemon/infer.c).
 *
 * Up to MAPGUARD_MAX ranges at once (one per loaded model file); the table is static, so
 * arming never allocates. A model copied into memory (engine/mstore.h) cannot shrink and
 * needs no guard.
 * Not here: noticing a change that did not fault (infer.c compares the file's stat). */
#ifndef EDGELLM_MAPGUARD_H
#define EDGELLM_MAPGUARD_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

enum { MAPGUARD_MAX = 16 };

/* One guarded range: a slot of the process-wide table, not allocated. */
typedef struct mapguard mapguard;

/* Guards [base, base + size) (a read-only mapping the caller owns, which must stay mapped
 * until mapguard_disarm) and returns its guard in *out. Installs the handler the first time.
 * -EBUSY when MAPGUARD_MAX ranges are guarded already; -errno from sigaction. */
int mapguard_arm(mapguard **out, const void *base, size_t size, err_info *ei);
/* Stops guarding g's range (call it before unmapping); SIGBUS there is fatal again and the
 * slot is free. NULL: nothing. */
void mapguard_disarm(mapguard *g);
/* Pages of g's range replaced by zeros since it was armed; 0 for NULL. Any thread. */
uint64_t mapguard_faults(const mapguard *g);

#endif
