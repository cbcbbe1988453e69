/* cli_tokenize — `edgellm tokenize -m MODEL.gguf [--no-bos]`: prints the token ids of all
 * of stdin (bytes as they are: no newline stripping, no special-token parsing) on one line,
 * separated by spaces. Other tools compare this output with llama.cpp's, so the format is
 * fixed. Reads only the tokenizer metadata: vocab-only GGUFs work.
 * Not here: detokenizing, or tokenizing with chat templates. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/cli.h"
#include "engine/gguf.h"
#include "engine/tok.h"

#define CMD "tokenize"
#define USAGE "-m MODEL.gguf [--no-bos] < TEXT"

/* Reads all of f into a malloc'd buffer (*out, *len). */
static int read_all(FILE *f, char **out, size_t *len, err_info *ei)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *grown = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    if (!buf)
        return err_set(ei, -ENOMEM, "out of memory reading standard input");
    if (ferror(f)) {
        free(buf);
        return err_set(ei, -EIO, "cannot read standard input");
    }
    *out = buf;
    *len = n;
    return 0;
}

int cli_tokenize(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},
        {"no-bos", no_argument, 0, 'B'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *path = NULL;
    bool add_bos = true;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":m:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm': path = optarg; break;
        case 'B': add_bos = false; break;
        case 'h': printf("usage: edgellm %s %s\n", CMD, USAGE); return 0;
        case ':': return cli_usage(CMD, USAGE, "option %s needs a value", argv[optind - 1]);
        default: return cli_usage(CMD, USAGE, "unknown option %s", argv[optind - 1]);
        }
    }
    if (!path)
        return cli_usage(CMD, USAGE, "no model given (-m)");
    if (optind < argc)
        return cli_usage(CMD, USAGE, "unexpected argument '%s'", argv[optind]);

    err_info ei = {0};
    gguf *g = NULL;
    tok_vocab *v = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t len = 0;
    int n = 0, status = 1;
    int rc = gguf_open(&g, path, &ei);
    if (!rc)
        rc = tok_load(&v, g, &ei);
    if (!rc)
        rc = read_all(stdin, &text, &len, &ei);
    if (rc)
        goto done;
    /* a first guess that nearly always fits; tok_encode says how many when it does not */
    int cap = len < 1 << 20 ? (int)len + 16 : 1 << 20;
    for (;;) {
        int32_t *grown = realloc(ids, (size_t)cap * sizeof *ids);
        if (!grown) {
            rc = err_set(&ei, -ENOMEM, "out of memory for %d token ids", cap);
            goto done;
        }
        ids = grown;
        rc = tok_encode(v, text, len, add_bos, false, ids, cap, &n);
        if (rc != -ERANGE)
            break;
        cap = n;
    }
    if (rc) {
        err_set(&ei, rc, "tokenizing %zu bytes: %s", len, err_message(rc));
        goto done;
    }
    for (int i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    if (fflush(stdout) != 0 || ferror(stdout))
        rc = err_set(&ei, -EIO, "cannot write the token ids");
    else
        status = 0;
done:
    if (rc)
        status = cli_fail(CMD, &ei, rc);
    free(ids);
    free(text);
    tok_free(v);
    gguf_close(g);
    return status;
}
