/* placeholder until the real command lands */
#include "daemon/cli.h"
int cli_info(int argc, char **argv) { (void)argc; (void)argv; err_info ei = {0}; return cli_fail("info", &ei, -ERR_UNSUPPORTED); }
