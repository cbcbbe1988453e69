/* edgellm logits — teacher-forces a token sequence and prints, per position, the ids and
 * values of the largest logits as one JSON object per line. The conformance harness and
 * anyone comparing against llama.cpp read this output. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemon/cli.h"
#include "daemon/cli_engine.h"
#include "engine/model.h"

#define USAGE CLI_ENGINE_USAGE " --tokens ID,ID,... [--top K]"

/* Indices of the k largest values of x[0..n), largest first (ties: lower index first). */
static void top_k(const float *x, int n, int k, int32_t *idx)
{
    for (int j = 0; j < k; j++)
        idx[j] = -1;
    for (int i = 0; i < n; i++) {
        if (idx[k - 1] >= 0 && x[i] <= x[idx[k - 1]])
            continue;
        int j = k - 1;
        while (j > 0 && (idx[j - 1] < 0 || x[i] > x[idx[j - 1]])) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
}

int cli_logits(int argc, char **argv)
{
    static const struct option longopts[] = {CLI_ENGINE_LONGOPTS, {"tokens", required_argument, 0, 'T'},
                                             {"top", required_argument, 0, 'k'}, {"help", no_argument, 0, 'h'}, {0}};
    cli_engine_opts eo;
    cli_engine_opts_default(&eo);
    const char *tokens_arg = NULL;
    int top = 40, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, CLI_ENGINE_SHORTOPTS, longopts, NULL)) != -1) {
        int r = cli_engine_parse_opt(&eo, opt, optarg, "logits");
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        switch (opt) {
        case 'T': tokens_arg = optarg; break;
        case 'k': top = atoi(optarg); break;
        case 'h': printf("usage: edgellm logits %s\n", USAGE); return 0;
        default: return cli_usage("logits", USAGE, "unknown option");
        }
    }
    if (!eo.model_path || !tokens_arg)
        return cli_usage("logits", USAGE, "-m and --tokens are required");
    int32_t *tokens;
    int n;
    if (cli_parse_int_list(tokens_arg, &tokens, &n) || n == 0)
        return cli_usage("logits", USAGE, "--tokens must be a comma-separated list of token ids");
    if (eo.n_ctx <= 0)
        eo.n_ctx = n; /* exactly what teacher forcing needs */

    err_info ei = {0};
    cli_engine e;
    float *logits = NULL;
    int32_t *idx = NULL;
    int rc = cli_engine_open(&e, &eo, &ei);
    if (rc) {
        free(tokens);
        return cli_fail("logits", &ei, rc);
    }
    int32_t n_vocab = model_hparams_of(e.m)->n_vocab;
    if (top < 1 || top > n_vocab)
        top = top < 1 ? 1 : n_vocab;
    logits = malloc((size_t)n * n_vocab * sizeof *logits);
    idx = malloc((size_t)top * sizeof *idx);
    if (!logits || !idx)
        rc = err_set(&ei, -ENOMEM, "out of memory for %d x %d logits", n, n_vocab);
    if (!rc)
        rc = model_session_eval(e.s, tokens, n, logits, true, NULL, &ei);
    for (int p = 0; !rc && p < n; p++) {
        const float *row = logits + (size_t)p * n_vocab;
        top_k(row, n_vocab, top, idx);
        printf("{\"pos\":%d,\"top_ids\":[", p);
        for (int j = 0; j < top; j++)
            printf("%s%d", j ? "," : "", idx[j]);
        printf("],\"top_logits\":[");
        for (int j = 0; j < top; j++)
            printf("%s%.6g", j ? "," : "", row[idx[j]]);
        printf("]}\n");
    }
    free(idx);
    free(logits);
    free(tokens);
    cli_engine_close(&e);
    return rc ? cli_fail("logits", &ei, rc) : 0;
}
