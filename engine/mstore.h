/* mstore — the shared-memory model store: a model file is copied once into a named POSIX
 * shared-memory object, and every later process (the daemon, a restarted daemon, `edgellm
 * run`) maps that object instead of reading the file again. On an SD card (40-90 MB/s) this
 * turns a restart from a multi-second read into a page-table walk.
 *
 * Segment layout (MSTORE_LAYOUT 2):
 *   [0, data_offset)           header: magic "EDGLLMSG", layout, state (creating/complete),
 *                              creator pid, bytes copied so far, whether prepare rearranged
 *                              the bytes, the file's identity (realpath, st_dev, st_ino, size,
 *                              mtime in ns) and the SHA-256 of its bytes (as in the file);
 *   [data_offset, +file size)  the file's bytes, possibly rearranged by the creator's prepare.
 *                              data_offset is a multiple of the page size, so every alignment
 *                              inside the GGUF file holds in the segment.
 * Name: "/edgellm-m2-P-I", P = 16 hex digits of SHA-256(realpath), I = 16 hex digits of
 * SHA-256(realpath, dev, ino, size, mtime). A changed file has a new name, so it is never
 * confused with its old copy; P lets the creator find and remove the old copies of the same
 * path. The layout version is in the name, so two builds with different layouts never fight
 * (a layout-1 build cannot read a rearranged copy); the creator also removes the same path's
 * layout-1 copies ("/edgellm-m1-P-..."), which after an upgrade would sit in RAM until reboot.
 *
 * Protocol (every step tolerates a concurrent process doing the same):
 *   - creating: shm_open(O_CREAT|O_EXCL) decides the one creator, which holds flock(LOCK_EX)
 *     on the object until the copy is complete; it reserves the memory up front (a full
 *     /dev/shm is an error, not a SIGBUS later) by faulting every page in through a mapping
 *     that asks for 2 MiB pages (posix_fallocate where the kernel predates
 *     MADV_POPULATE_WRITE), copies the file with read() in
 *     chunks (dropping each from the page cache: the model must not sit in RAM twice) while
 *     a second thread hashes behind it, lets prepare rearrange the complete, hashed copy
 *     (unless it verifies: see below), publishes state=complete, removes older versions;
 *   - waiting: a process that finds the object locked waits while the creator's copied
 *     counter advances, and gives up with -ERR_TIMEOUT after wait_ms without progress;
 *   - stale: an incomplete object nobody holds locked lost its creator (the kernel drops a
 *     dead creator's lock; its recorded pid is only for messages, pids get reused), as did
 *     an empty one older than a second: it is unlinked and the copy redone;
 *   - attaching: magic, layout, state, segment size and identity must equal the file's
 *     current stat; any mismatch unlinks the object and copies again. With verify, the copy
 *     must also hash to the recorded SHA-256 of the file, which a rearranged copy cannot:
 *     a verifying process replaces one by a plain copy, and never calls prepare itself.
 * The segment's mode mirrors the file's read bits (plus owner write), so whoever may read
 * the file may attach to its copy. The object lives until unlinked or reboot: that is the
 * point (a restarted daemon finds it). mstore_remove deletes it.
 *
 * Copying also makes the model immune to the file being truncated or replaced while in use
 * (a plain file mapping would SIGBUS on a truncated page).
 *
 * Memory: the segment is RAM (tmpfs), counted once however many processes map it; each
 * process's RSS grows only by the pages it touches, and PSS splits shared pages between
 * the processes mapping them. Without mlock the pages can still go to swap, like any shmem.
 *
 * Not here: parsing the model (gguf.h, model.h work over mstore_data); hashing (sha256.h).
 * Linux and glibc (shm_open objects are files in /dev/shm). Never prints. */
#ifndef EDGELLM_MSTORE_H
#define EDGELLM_MSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"
#include "engine/sha256.h"

enum { MSTORE_LAYOUT = 2, MSTORE_NAME_MAX = 64 };

typedef struct mstore_opts {
    uint64_t budget_bytes;  /* refuse a model larger than this; 0: no budget of our own */
    bool create;            /* false: attach to an existing copy or fail (-ERR_NOT_FOUND) */
    bool mlock;             /* lock the bytes in RAM; RLIMIT_MEMLOCK (LimitMEMLOCK=) must allow */
    bool verify;            /* re-hash an existing copy before trusting it; a mismatch recopies.
                               A rearranged copy cannot be checked against the file: it is
                               recopied, and prepare is not called (the file's bytes as they are) */
    int wait_ms;            /* give up on another process's copy after this long without
                               progress; <= 0: MSTORE_WAIT_MS_DEFAULT */
    /* Rearranges the copy once, before it is published: called by the creator only, on the
     * file's bytes (data, size: the writable copy, already hashed), e.g. model_prepare_shared.
     * Returns 1 when it changed the bytes, 0 when it left them as they are, or a negative
     * code (with ei set) to fail the open (the copy is then removed). NULL: never called.
     * Waiters see no progress while it runs: it must take less than their wait_ms. */
    int (*prepare)(void *data, size_t size, err_info *ei);
} mstore_opts;

enum { MSTORE_WAIT_MS_DEFAULT = 30000 };

/* create = true, everything else off (prepare NULL). */
void mstore_opts_default(mstore_opts *o);

typedef struct mstore mstore;

/* Maps the shared copy of the file at path, creating it first if needed (and allowed).
 * Refuses with -ENOMEM, and a message giving the sizes, a model larger than
 * o->budget_bytes, or (when it would have to copy) larger than MemAvailable or than the
 * free space of /dev/shm. Other errors: -errno of the file or of shm_open/mmap (message
 * names the path or segment), -ERR_NOT_FOUND without create, -ERR_TIMEOUT when another
 * process's copy stalls, -ERR_IO when the file changed during the copy, -EPERM/-ENOMEM from
 * mlock (message names RLIMIT_MEMLOCK). On success *out owns a read-only mapping; free it
 * with mstore_close. o may be NULL (defaults). */
int mstore_open(mstore **out, const char *path, const mstore_opts *o, err_info *ei);

/* Unmaps (and unlocks) this process's view; the segment stays for the next process. */
void mstore_close(mstore *s);

/* The file's bytes (rearranged when mstore_prepared), read-only and page-aligned, valid
 * until mstore_close. */
const void *mstore_data(const mstore *s);
size_t mstore_size(const mstore *s);
/* SHA-256 of the file's bytes, recorded when the copy was made (before any prepare): the
 * model's identity for caches, without hashing the file again. Owned by s. */
const uint8_t *mstore_hash(const mstore *s);
/* True when this mstore_open made the copy (a cold start), false when it attached. */
bool mstore_created(const mstore *s);
/* True when the copy this process mapped was rearranged by its creator's prepare, whether
 * this process made it or attached to it; false when it holds the file's bytes as they are. */
bool mstore_prepared(const mstore *s);
/* The segment's name, e.g. "/edgellm-m2-0123456789abcdef-fedcba9876543210". Owned by s. */
const char *mstore_name(const mstore *s);

/* Bytes of the segment this process maps in 2 MiB pages (ShmemPmdMapped in
 * /proc/self/smaps). A page is mapped when first touched, so after a forward pass this is
 * how much of the model decode reads without a TLB miss per 4 KiB; 0 when the tmpfs gave
 * 4 KiB pages (mount /dev/shm with huge=advise or huge=within_size, and copy anew).
 * -errno when /proc/self/smaps cannot be read. */
int64_t mstore_huge_bytes(const mstore *s);

/* Unlinks every segment holding a version of the file at path (path must still resolve),
 * layout-1 copies included: processes that have one mapped keep it until they unmap.
 * Returns how many were removed, or a negative code. For tests, benchmarks, and an
 * operator freeing the memory. */
int mstore_remove(const char *path, err_info *ei);

#endif
