/* mapguard — see mapguard.h. The handler touches only atomics and makes raw system calls (no
 * libc lock, no allocation; the raw mmap also bypasses a sanitizer's interceptor), which is
 * what makes it safe to run on any thread at any instruction. A slot is claimed with its
 * `taken` flag and published by storing `hi` last, so the handler never sees half a range. */
#include "mapguard.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct mapguard {
    atomic_bool taken;
    _Atomic uintptr_t lo, hi; /* [lo, hi); hi == 0: not guarding yet or any more */
    _Atomic uint64_t faults;
};

static mapguard guards[MAPGUARD_MAX];
static _Atomic uintptr_t page_mask;
static atomic_bool installed;

/* The default action, restored so the fault repeats and kills the process as it would have;
 * a SIGBUS sent by kill() does not repeat by itself, so it is sent again (it stays blocked
 * until the handler returns). */
static void give_up(const siginfo_t *info)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGBUS, &dfl, NULL);
    if (info->si_code <= 0) /* SI_USER, SI_QUEUE, SI_TKILL: not a fault */
        raise(SIGBUS);
}

/* The guard whose range holds a, or NULL. */
static mapguard *guard_of(uintptr_t a)
{
    for (int i = 0; i < MAPGUARD_MAX; i++) {
        uintptr_t hi = atomic_load(&guards[i].hi);
        if (hi && a >= atomic_load(&guards[i].lo) && a < hi)
            return &guards[i];
    }
    return NULL;
}

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    (void)sig, (void)uctx;
    int saved = errno; /* the interrupted code may be between a call and its errno check */
    uintptr_t a = (uintptr_t)info->si_addr, mask = atomic_load(&page_mask);
    /* BUS_ADRERR is "nonexistent physical address": a page past the end of the file */
    mapguard *g = info->si_code == BUS_ADRERR ? guard_of(a) : NULL;
    if (g && syscall(SYS_mmap, (void *)(a & mask), ~mask + 1, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
                     0) != -1)
        atomic_fetch_add(&g->faults, 1);
    else
        give_up(info);
    errno = saved;
}

static int install(err_info *ei)
{
    atomic_store(&page_mask, ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, NULL) < 0)
        return err_set(ei, -errno, "mapguard: cannot install the SIGBUS handler: %s", strerror(errno));
    atomic_store(&installed, true);
    return 0;
}

int mapguard_arm(mapguard **out, const void *base, size_t size, err_info *ei)
{
    *out = NULL;
    /* two threads arming at once may both install: the same handler, twice */
    int rc = atomic_load(&installed) ? 0 : install(ei);
    if (rc < 0)
        return rc;
    for (int i = 0; i < MAPGUARD_MAX; i++) {
        mapguard *g = &guards[i];
        if (atomic_exchange(&g->taken, true))
            continue;
        atomic_store(&g->faults, 0);
        atomic_store(&g->lo, (uintptr_t)base);
        atomic_store(&g->hi, (uintptr_t)base + size);
        *out = g;
        return 0;
    }
    return err_set(ei, -EBUSY, "mapguard: %d mappings are guarded already", MAPGUARD_MAX);
}

void mapguard_disarm(mapguard *g)
{
    if (!g)
        return;
    atomic_store(&g->hi, 0);
    atomic_store(&g->lo, 0);
    atomic_store(&g->taken, false);
}

uint64_t mapguard_faults(const mapguard *g)
{
    return g ? atomic_load(&g->faults) : 0;
}
