/* placeholder until the real command lands */
#include "daemon/cli.h"
int cli_mkmodel(int argc, char **argv) { (void)argc; (void)argv; err_info ei = {0}; return cli_fail("mkmodel", &ei, -ERR_UNSUPPORTED); }
