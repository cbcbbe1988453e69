/* cli — the subcommands of build/edgellm. Each returns the process exit status
 * (0 ok, 1 runtime failure, 2 usage error); only edgellm_main.c calls exit(). */
#ifndef EDGELLM_CLI_H
#define EDGELLM_CLI_H

#include "engine/err.h"

int cli_tokenize(int argc, char **argv); /* daemon/cli_tokenize.c */
int cli_logits(int argc, char **argv);   /* daemon/cli_logits.c */
int cli_run(int argc, char **argv);      /* daemon/cli_run.c */
int cli_info(int argc, char **argv);     /* daemon/cli_info.c */
int cli_mkmodel(int argc, char **argv);  /* tools/mkmodel.c */
int cli_bench(int argc, char **argv);    /* tools/bench.c */
int cli_chat(int argc, char **argv);     /* daemon/cli_chat.c: client of edgellmd */

/* Prints "edgellm CMD: <detail>" to stderr and returns 1. */
int cli_fail(const char *cmd, const err_info *ei, int rc);
/* Prints "edgellm CMD: <message>" and the command's usage line, returns 2. */
int cli_usage(const char *cmd, const char *usage, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
