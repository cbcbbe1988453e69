/* placeholder until the real command lands */
#include "daemon/cli.h"
int cli_logits(int argc, char **argv) { (void)argc; (void)argv; err_info ei = {0}; return cli_fail("logits", &ei, -ERR_UNSUPPORTED); }
