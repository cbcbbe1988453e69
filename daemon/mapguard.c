/* mapguard — see mapguard.h. The handler touches only atomics and makes one raw mmap system
 * call (no libc lock, no allocation; the raw call also bypasses a sanitizer's interceptor),
 * which is what makes it safe to run on any thread at any instruction. */
#include "mapguard.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static _Atomic uintptr_t guard_lo, guard_hi; /* [lo, hi); hi == 0: nothing guarded */
static _Atomic uint64_t faults;
static uintptr_t page_mask;
static atomic_bool installed;

/* The default action, restored so the fault repeats and kills the process as it would have. */
static void give_up(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGBUS, &dfl, NULL);
}

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    (void)sig, (void)uctx;
    int saved = errno; /* the interrupted code may be between a call and its errno check */
    uintptr_t a = (uintptr_t)info->si_addr, lo = atomic_load(&guard_lo), hi = atomic_load(&guard_hi);
    /* BUS_ADRERR is "nonexistent physical address": a page past the end of the file */
    if (info->si_code == BUS_ADRERR && a >= lo && a < hi) {
        long p = syscall(SYS_mmap, (void *)(a & page_mask), ~page_mask + 1, PROT_READ,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p != -1) {
            atomic_fetch_add(&faults, 1);
            errno = saved;
            return;
        }
    }
    give_up();
    errno = saved;
}

int mapguard_arm(const void *base, size_t size, err_info *ei)
{
    if (atomic_load(&guard_hi))
        return err_set(ei, -EBUSY, "mapguard: a mapping is already guarded");
    if (!atomic_load(&installed)) {
        page_mask = ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGBUS, &sa, NULL) < 0)
            return err_set(ei, -errno, "mapguard: cannot install the SIGBUS handler: %s", strerror(errno));
        atomic_store(&installed, true);
    }
    atomic_store(&faults, 0);
    atomic_store(&guard_lo, (uintptr_t)base);
    atomic_store(&guard_hi, (uintptr_t)base + size);
    return 0;
}

void mapguard_disarm(void)
{
    atomic_store(&guard_hi, 0);
    atomic_store(&guard_lo, 0);
}

uint64_t mapguard_faults(void)
{
    return atomic_load(&faults);
}
