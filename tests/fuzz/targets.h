/* targets — the bodies of the fuzz targets, shared by the libFuzzer harnesses
 * (tests/fuzz/fuzz_<name>.c, one line each) and the Check test that replays the seed corpus
 * and every saved crash input (tests/test_fuzz_regress.c), so an input that failed under
 * the fuzzer fails the unit tests through the very same code.
 *
 * Each target feeds one parser (the engine's or the HTTP API's) arbitrary bytes and,
 * besides memory safety (the sanitizers' job), checks properties that must hold for every
 * input: ids in range, text that survives an encode/decode round trip, lengths that match.
 * A violated property calls the fail handler, which by default prints the message and
 * aborts, so libFuzzer saves the input as a crash.
 *
 * Not here: building or running the fuzzers (run.sh), listing the files to replay (the
 * Check test). Test code: may allocate, print to stderr and abort. */
#ifndef EDGELLM_FUZZ_TARGETS_H
#define EDGELLM_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

typedef struct fuzz_target {
    const char *name;   /* "gguf": the folders corpus/<name>/ and regress/<name>/ */
    /* One-time set-up before the first input, or NULL. Returns 0 or a negative code with
     * a message in ei (e.g. a reference vocab missing from $SHARED). */
    int (*init)(err_info *ei);
    /* Runs one input; data is borrowed for the call. Property failures go to the fail
     * handler and do not return. */
    void (*run)(const uint8_t *data, size_t size);
} fuzz_target;

extern const fuzz_target fuzz_target_gguf, fuzz_target_tok, fuzz_target_chat, fuzz_target_utf8, fuzz_target_req,
    fuzz_target_sse;

/* Every target above, NULL-terminated (what the replay test walks). */
extern const fuzz_target *const fuzz_targets[];

/* Called with a message naming the failed property; must not return. NULL (the default):
 * print to stderr and abort(). The Check test installs one that fails the test. */
extern void (*fuzz_fail_handler)(const char *msg);

/* Runs t's init once per process; aborts with the message on failure (a harness without
 * its reference data must not report a clean run). */
void fuzz_init_or_die(const fuzz_target *t);

/* libFuzzer's two entry points for target t: a harness file is this one line. */
#define FUZZ_HARNESS(t)                                                            \
    int LLVMFuzzerInitialize(int *argc, char ***argv);                             \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                  \
    int LLVMFuzzerInitialize(int *argc, char ***argv)                              \
    {                                                                              \
        (void)argc, (void)argv;                                                    \
        fuzz_init_or_die(&(t));                                                    \
        return 0;                                                                  \
    }                                                                              \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                   \
    {                                                                              \
        (t).run(data, size);                                                       \
        return 0;                                                                  \
    }

#endif
