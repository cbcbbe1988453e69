/* placeholder until the real command lands */
#include "daemon/cli.h"
int cli_run(int argc, char **argv) { (void)argc; (void)argv; err_info ei = {0}; return cli_fail("run", &ei, -ERR_UNSUPPORTED); }
