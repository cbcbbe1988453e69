/* fuzz_chat — libFuzzer harness: chat template detection and rendering in every family.
 * The body is fuzz_target_chat in targets.c, shared with tests/test_fuzz_regress.c. */
#include "targets.h"

FUZZ_HARNESS(fuzz_target_chat)
