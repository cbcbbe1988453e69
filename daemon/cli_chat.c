/* placeholder until the real command lands */
#include "daemon/cli.h"
int cli_chat(int argc, char **argv) { (void)argc; (void)argv; err_info ei = {0}; return cli_fail("chat", &ei, -ERR_UNSUPPORTED); }
