/* edgellm info — describes a GGUF model: architecture and shapes, tensor types with their
 * byte totals, tokenizer, chat template family. Reads metadata only (no session). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "daemon/cli.h"
#include "engine/chat.h"
#include "engine/model.h"
#include "engine/tok.h"

#define USAGE "-m MODEL.gguf"

static void print_types(const gguf *g)
{
    uint64_t count[QT_COUNT] = {0}, bytes[QT_COUNT] = {0};
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        count[t->type]++;
        bytes[t->type] += t->nbytes;
    }
    printf("tensor types:");
    for (int t = 0; t < QT_COUNT; t++)
        if (count[t])
            printf(" %s x%llu (%.1f MiB)", qt_name((uint32_t)t), (unsigned long long)count[t], bytes[t] / 1048576.0);
    printf("\n");
}

static void print_token(const char *label, const tok_vocab *v, int32_t id)
{
    if (id == TOK_NULL) {
        printf(" %s=none", label);
        return;
    }
    gguf_str s = tok_text(v, id);
    printf(" %s=%d '%.*s'", label, id, (int)(s.len > 32 ? 32 : s.len), s.ptr);
}

int cli_info(int argc, char **argv)
{
    static const struct option longopts[] = {{"model", required_argument, 0, 'm'}, {"help", no_argument, 0, 'h'}, {0}};
    const char *path = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:", longopts, NULL)) != -1) {
        if (opt == 'm')
            path = optarg;
        else if (opt == 'h') {
            printf("usage: edgellm info %s\n", USAGE);
            return 0;
        } else
            return cli_usage("info", USAGE, "unknown option");
    }
    if (!path)
        return cli_usage("info", USAGE, "-m is required");
    err_info ei = {0};
    model *m;
    int rc = model_open(&m, path, &ei);
    if (rc)
        return cli_fail("info", &ei, rc);
    const model_hparams *hp = model_hparams_of(m);
    const gguf *g = model_gguf(m);
    const tok_vocab *v = model_vocab(m);
    printf("file: %s (GGUF v%u, %.1f MiB, %zu tensors, %.1f MiB of weights)\n", path, gguf_version(g),
           gguf_size(g) / 1048576.0, gguf_n_tensors(g), model_weight_bytes(m) / 1048576.0);
    printf("name: %s\n", hp->name[0] ? hp->name : "(none)");
    printf("architecture: %s\n", hp->arch_name);
    printf("shape: n_embd=%d n_layer=%d n_head=%d n_head_kv=%d head_dim=%d n_ff=%d n_vocab=%d n_ctx_train=%d\n",
           hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff, hp->n_vocab, hp->n_ctx_train);
    printf("rope: n_rot=%d base=%g freq_scale=%g style=%s%s | rms_eps=%g | output=%s%s\n", hp->n_rot, hp->rope_base,
           hp->rope_freq_scale, hp->rope_neox ? "neox" : "normal", hp->has_rope_factors ? " +freq factors" : "",
           hp->rms_eps, hp->tied_output ? "tied to token_embd" : "separate", hp->qkv_bias ? " | qkv bias" : "");
    printf("main type: %s\n", qt_name(model_main_type(m)));
    print_types(g);
    printf("tokenizer: %s pre=%s n_vocab=%d add_bos=%s", tok_kind_of(v) == TOK_SPM ? "llama (SentencePiece)" : "gpt2 (byte-level BPE)",
           tok_pre_name(v), tok_n_vocab(v), tok_adds_bos(v) ? "yes" : "no");
    print_token("bos", v, tok_bos(v));
    print_token("eos", v, tok_eos(v));
    printf("\n");
    gguf_str tmpl = {0};
    bool has_tmpl = gguf_get_str(g, "tokenizer.chat_template", &tmpl, NULL) == 0;
    printf("chat template: %s\n", has_tmpl ? chat_family_name(chat_detect(tmpl.ptr, (size_t)tmpl.len)) : "(none)");
    model_close(m);
    return 0;
}
