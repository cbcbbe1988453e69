/* fuzz_sse — libFuzzer harness: a streamed answer's text through api_job_emit_* into SSE frames.
 * The body is fuzz_target_sse in targets.c, shared with tests/test_fuzz_regress.c. */
#include "targets.h"

FUZZ_HARNESS(fuzz_target_sse)
