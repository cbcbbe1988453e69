/* fuzz_req — libFuzzer harness: request bodies (api_req_parse) of every route.
 * The body is fuzz_target_req in targets.c, shared with tests/test_fuzz_regress.c. */
#include "targets.h"

FUZZ_HARNESS(fuzz_target_req)
