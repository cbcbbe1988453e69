/* mapguard — keeps a file mapping that shrinks under the daemon (the model file truncated,
 * or rewritten in place, while it is being served) from killing the process with SIGBUS.
 *
 * A read of a mapped page that now lies past the file's end raises SIGBUS in whichever
 * thread made it: the worker, a thread-pool worker, a connection thread tokenizing. The
 * handler, installed once for the process, checks that the faulting address lies in the
 * guarded range; if so it maps a page of zeros over the missing one (MAP_FIXED, so the
 * faulting instruction reads zeros when it is restarted) and counts the fault. Any other
 * SIGBUS gets the default action back and happens again: a real bug still dies with a core.
 * What read the zeros computed garbage, never a crash; the owner learns of it through
 * mapguard_faults and fails the request and the model with a clear error (daemon/infer.c).
 *
 * One guarded range per process (the daemon serves one model at a time). A model copied
 * into memory (engine/mstore.h) cannot shrink and needs no guard.
 * Not here: noticing a change that did not fault (infer.c compares the file's stat). */
#ifndef EDGELLM_MAPGUARD_H
#define EDGELLM_MAPGUARD_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

/* Guards [base, base + size) (a read-only mapping the caller owns, which must stay mapped
 * until mapguard_disarm). Installs the handler the first time. -EBUSY while another range
 * is guarded; -errno from sigaction. */
int mapguard_arm(const void *base, size_t size, err_info *ei);
/* Stops guarding (before the range is unmapped); SIGBUS there is fatal again. */
void mapguard_disarm(void);
/* Pages of the guarded range replaced by zeros since it was armed. Any thread. */
uint64_t mapguard_faults(void);

#endif
