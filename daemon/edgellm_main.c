/* edgellm — the command-line tool: one binary, one subcommand per job. The subcommands
 * live in cli_*.c (and tools/); this file only dispatches. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "daemon/cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"run", cli_run, "generate text from a prompt"},
    {"tokenize", cli_tokenize, "print the token ids of stdin"},
    {"logits", cli_logits, "teacher-force tokens and print the top logits per position"},
    {"info", cli_info, "describe a GGUF model: architecture, shapes, types, tokenizer, template"},
    {"mkmodel", cli_mkmodel, "write a random-weight GGUF of a real model's shape"},
    {"bench", cli_bench, "measure prefill and decode speed, memory and load time"},
    {"chat", cli_chat, "chat with a running edgellmd (TCP or Unix socket)"},
};

int cli_fail(const char *cmd, const err_info *ei, int rc)
{
    fprintf(stderr, "edgellm %s: %s\n", cmd, err_text(ei, rc));
    return 1;
}

int cli_usage(const char *cmd, const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "edgellm %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: edgellm %s %s\n", cmd, usage);
    return 2;
}

static int help(FILE *f)
{
    fprintf(f, "usage: edgellm COMMAND [options]   (edgellm COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return help(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
        return help(stdout);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "edgellm: unknown command '%s'\n", argv[1]);
    return help(stderr);
}
