/* fuzz_utf8 — libFuzzer harness: UTF-8 helpers against a reference decoder.
 * The body is fuzz_target_utf8 in targets.c, shared with tests/test_fuzz_regress.c. */
#include "targets.h"

FUZZ_HARNESS(fuzz_target_utf8)
