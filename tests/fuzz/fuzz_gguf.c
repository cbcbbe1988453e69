/* fuzz_gguf — libFuzzer harness: GGUF reader, then the tokenizer and the model loaded from what it accepted.
 * The body is fuzz_target_gguf in targets.c, shared with tests/test_fuzz_regress.c. */
#include "targets.h"

FUZZ_HARNESS(fuzz_target_gguf)
