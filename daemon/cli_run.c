/* edgellm run — generates text from a prompt on the local engine and streams it to stdout;
 * timing goes to stderr. With --chat the prompt is one user turn rendered with the model's
 * chat template. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/cli.h"
#include "daemon/cli_engine.h"
#include "engine/chat.h"
#include "engine/gen.h"
#include "engine/tok.h"

#define USAGE                                                                                             \
    CLI_ENGINE_USAGE " -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]" \
                     " [--seed S] [--stop TEXT]... [--ignore-eos] [--chat [--system TEXT] [--chat-template NAME]]"

enum { MAX_STOPS = 8 };

typedef struct run_opts {
    cli_engine_opts engine;
    const char *prompt;
    const char *system;
    const char *chat_template;
    bool chat;
    bool seed_given;
    gen_request rq;
    const char *stops[MAX_STOPS + 1];
} run_opts;

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    *out = strtof(s, &end);
    return errno || end == s || *end ? -1 : 0;
}

static int parse_args(int argc, char **argv, run_opts *o)
{
    static const struct option longopts[] = {
        CLI_ENGINE_LONGOPTS,
        {"prompt", required_argument, 0, 'p'}, {"n-predict", required_argument, 0, 'n'},
        {"temp", required_argument, 0, 'T'}, {"top-k", required_argument, 0, 'k'},
        {"top-p", required_argument, 0, 'P'}, {"min-p", required_argument, 0, 'M'},
        {"repeat-penalty", required_argument, 0, 'R'}, {"seed", required_argument, 0, 's'},
        {"stop", required_argument, 0, 'S'}, {"ignore-eos", no_argument, 0, 'E'},
        {"chat", no_argument, 0, 'C'}, {"system", required_argument, 0, 'Y'},
        {"chat-template", required_argument, 0, 'J'}, {"help", no_argument, 0, 'h'}, {0}};
    cli_engine_opts_default(&o->engine);
    sampler_params_default(&o->rq.sampling);
    o->rq.max_tokens = 128;
    o->rq.stop = o->stops;
    int opt, bad = 0;
    optind = 1;
    while (!bad && (opt = getopt_long(argc, argv, CLI_ENGINE_SHORTOPTS "p:n:s:", longopts, NULL)) != -1) {
        int r = cli_engine_parse_opt(&o->engine, opt, optarg, "run");
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        sampler_params *sp = &o->rq.sampling;
        switch (opt) {
        case 'p': o->prompt = optarg; break;
        case 'n': o->rq.max_tokens = atoi(optarg); break;
        case 'T': bad = parse_float(optarg, &sp->temperature); break;
        case 'k': sp->top_k = atoi(optarg); break;
        case 'P': bad = parse_float(optarg, &sp->top_p); break;
        case 'M': bad = parse_float(optarg, &sp->min_p); break;
        case 'R': bad = parse_float(optarg, &sp->repeat_penalty); break;
        case 's': sp->seed = strtoull(optarg, NULL, 10); o->seed_given = true; break;
        case 'S':
            if (o->rq.n_stop == MAX_STOPS)
                return cli_usage("run", USAGE, "at most %d --stop strings", MAX_STOPS);
            if (!*optarg)
                return cli_usage("run", USAGE, "--stop needs a non-empty string");
            o->stops[o->rq.n_stop++] = optarg;
            break;
        case 'E': o->rq.ignore_eos = true; break;
        case 'C': o->chat = true; break;
        case 'Y': o->system = optarg; break;
        case 'J': o->chat_template = optarg; break;
        case 'h': printf("usage: edgellm run %s\n", USAGE); return -1;
        default: return cli_usage("run", USAGE, "unknown option");
        }
    }
    if (bad)
        return cli_usage("run", USAGE, "bad number '%s'", optarg);
    if (!o->engine.model_path || !o->prompt)
        return cli_usage("run", USAGE, "-m and -p are required");
    if (!o->seed_given)
        o->rq.sampling.seed = (uint64_t)time(NULL);
    return 0;
}

/* The chat family: the override by name, else detected from the model's template. */
static int chat_family_for(const model *m, const char *override, chat_family *f, err_info *ei)
{
    if (override) {
        *f = chat_family_from_name(override);
        return *f == CHAT_UNKNOWN ? err_set(ei, -EINVAL, "unknown chat template '%s'", override) : 0;
    }
    gguf_str tmpl = {0};
    gguf_get_str(model_gguf(m), "tokenizer.chat_template", &tmpl, NULL);
    *f = chat_detect(tmpl.ptr, (size_t)tmpl.len);
    if (*f == CHAT_UNKNOWN)
        return err_set(ei, -ERR_UNSUPPORTED, "the model has no recognised chat template; pass --chat-template NAME");
    return 0;
}

/* Prompt tokens for o (malloc'd into *toks). */
static int build_prompt(const model *m, run_opts *o, int32_t **toks, int *n, err_info *ei)
{
    const tok_vocab *v = model_vocab(m);
    char *text = NULL;
    size_t len = strlen(o->prompt);
    bool special = false;
    int rc = 0;
    if (o->chat) {
        chat_family fam;
        chat_msg msgs[2];
        size_t nm = 0;
        if ((rc = chat_family_for(m, o->chat_template, &fam, ei)))
            return rc;
        if (o->system)
            msgs[nm++] = (chat_msg){"system", o->system};
        msgs[nm++] = (chat_msg){"user", o->prompt};
        if ((rc = chat_render(fam, msgs, nm, true, &text, &len, ei)))
            return rc;
        special = true;
        const char *end = chat_turn_end(fam);
        if (*end && o->rq.n_stop < MAX_STOPS)
            o->stops[o->rq.n_stop++] = end;
    }
    int cap = (int)len + 8;
    *toks = malloc((size_t)cap * sizeof **toks);
    if (!*toks)
        rc = err_set(ei, -ENOMEM, "out of memory");
    else if ((rc = tok_encode(v, text ? text : o->prompt, len, true, special, *toks, cap, n)))
        rc = err_set(ei, rc, "cannot tokenize the prompt");
    free(text);
    return rc;
}

static int print_text(void *ud, const char *text, size_t len, int32_t token)
{
    (void)ud;
    (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int cli_run(int argc, char **argv)
{
    run_opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc; /* -1: help was printed */
    err_info ei = {0};
    cli_engine e;
    gen_ctx *g = NULL;
    int32_t *toks = NULL;
    if ((rc = cli_engine_open(&e, &o.engine, &ei)))
        return cli_fail("run", &ei, rc);
    if ((rc = build_prompt(e.m, &o, &toks, &o.rq.n_prompt, &ei)) || (rc = gen_ctx_new(&g, e.m, e.s, &ei)))
        goto done;
    o.rq.prompt = toks;
    if (!o.chat)
        print_text(NULL, o.prompt, strlen(o.prompt), 0);
    gen_result res;
    if ((rc = gen_run(g, &o.rq, print_text, NULL, &res, &ei)))
        goto done;
    static const char *finish_names[] = {"stop", "length", "cancelled"};
    double decode_s = (res.decode_ms) / 1e3;
    fprintf(stderr, "\n\nprompt: %d tokens in %.1f ms (%.1f t/s)%s | generated: %d tokens in %.1f ms (%.1f t/s) | "
                    "first token %.1f ms | finish: %s | seed %llu\n",
            res.n_prompt, res.prefill_ms, res.prefill_ms > 0 ? (res.n_prompt - res.n_prompt_reused) * 1e3 / res.prefill_ms : 0,
            res.n_prompt_reused ? " (some reused)" : "", res.n_generated, res.decode_ms,
            decode_s > 0 ? res.n_generated / decode_s : 0, res.first_token_ms, finish_names[res.finish],
            (unsigned long long)o.rq.sampling.seed);
done:
    gen_ctx_free(g);
    free(toks);
    cli_engine_close(&e);
    return rc ? cli_fail("run", &ei, rc) : 0;
}
