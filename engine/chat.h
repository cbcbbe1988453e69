/* chat — chat prompt formats. The GGUF's tokenizer.chat_template (a Jinja template) is
 * recognised by its text as one of the common families and rendered by hand-written code
 * for that family; we do not run Jinja.
 *
 * The rendered prompt never contains the BOS token text: the tokenizer adds BOS itself
 * (tok_encode with add_bos), so a template's leading "<s>"/"<|begin_of_text|>" is left out.
 * Special tokens in the output ("<|im_start|>") are meant to be tokenized with
 * parse_special. */
#ifndef EDGELLM_CHAT_H
#define EDGELLM_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

typedef enum chat_family {
    CHAT_UNKNOWN = 0,
    CHAT_CHATML,    /* <|im_start|>role\n...<|im_end|>  (Qwen, SmolLM, many fine-tunes) */
    CHAT_LLAMA2,    /* [INST] <<SYS>>...<</SYS>> ... [/INST] */
    CHAT_LLAMA3,    /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    CHAT_MISTRAL,   /* " [INST] ... [/INST]" without the Llama 2 system block: Mistral's
                     * tokenizer v1 (Mistral 7B v0.1/v0.2, Mixtral 8x7B) */
    CHAT_ZEPHYR,    /* <|role|>\n...</s> */
    CHAT_PHI3,      /* <|role|>\n...<|end|> */
    CHAT_GEMMA,     /* <start_of_turn>role\n...<end_of_turn> (assistant is "model") */
    CHAT_MISTRAL_V3,        /* "[INST] ...[/INST]": tokenizer v3 (Mistral 7B v0.3, Codestral) */
    CHAT_MISTRAL_V3_TEKKEN, /* "[INST]...[/INST]": Tekken (Mistral Nemo, Ministral) */
    CHAT_FAMILY_COUNT
} chat_family;

typedef struct chat_msg {
    const char *role;     /* "system", "user", "assistant" */
    const char *content;  /* UTF-8, NUL-terminated */
} chat_msg;

/* The family a Jinja template text belongs to, or CHAT_UNKNOWN. NULL text gives UNKNOWN. */
chat_family chat_detect(const char *template_text, size_t len);
/* "chatml", "llama2", "llama3", "mistral", "zephyr", "phi3", "gemma", "mistral-v3",
 * "mistral-v3-tekken"; "unknown". Static. */
const char *chat_family_name(chat_family f);
/* Family by name (for the override flag), or CHAT_UNKNOWN. */
chat_family chat_family_from_name(const char *name);

/* Renders messages as a prompt. add_assistant: end with the opening of an assistant turn
 * so the model answers. *out is malloc'd (NUL-terminated, length in *len); the caller frees
 * it. Fails with -EINVAL naming the message for an unknown role or -ERR_UNSUPPORTED for
 * CHAT_UNKNOWN.
 *
 * Roles are "system", "user" and "assistant", in any order. Families without a system turn
 * (llama2, the mistrals, gemma) put the system text at the start of the next user message
 * (Mistral v3/Tekken: of the last user message, as their templates do); several system
 * messages are joined with a blank line, and system text with no user message to carry it
 * gets a user turn of its own. In the [INST] families the user turn already opens the
 * answer, so add_assistant adds nothing there. msgs is only read during the call. */
int chat_render(chat_family f, const chat_msg *msgs, size_t n, bool add_assistant, char **out,
                size_t *len, err_info *ei);

/* Text that ends an assistant turn in family f (e.g. "<|im_end|>"), used as an extra stop
 * string when the model does not mark it end-of-generation. Static; "" if none. */
const char *chat_turn_end(chat_family f);

#endif
