/* fuzz_tok — libFuzzer harness: tokenizer round trip over four reference vocabs.
 * The body is fuzz_target_tok in targets.c, shared with tests/test_fuzz_regress.c. */
#include "targets.h"

FUZZ_HARNESS(fuzz_target_tok)
