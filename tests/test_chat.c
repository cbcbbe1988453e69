/* test_chat — chat template detection on real template texts (copied from the models'
 * tokenizer_config.json, and Phi-3's read from $SHARED/tokenizer/ggml-vocab-phi-3.gguf) and
 * rendering of every family against golden strings: what each family's official template
 * renders for llama.cpp's test conversation, leading BOS left out. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/gguf.h"

static const char *shared_dir(void)
{
    const char *s = getenv("SHARED");
    return s && *s ? s : "../shared";
}

/* ---- real templates ---------------------------------------------------------------------- */

/* Qwen/Qwen2.5-0.5B-Instruct */
static const char qwen25[] =
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are "
    "provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}";

/* meta-llama/Llama-2-7b-chat-hf */
static const char llama2_chat[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
    "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}";

/* meta-llama/Meta-Llama-3-8B-Instruct */
static const char llama3_instruct[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}";

/* mistralai/Mistral-7B-Instruct-v0.2 as first published (no system message) */
static const char mistral_v02_old[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

/* mistralai/Mistral-7B-Instruct-v0.2, Mistral's corrected v1 template */
static const char mistral_v1[] =
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the "
    "exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n";

/* The message loop of mistralai/Mistral-7B-Instruct-v0.3 and of Mistral-Nemo-Instruct-2407
 * (the tool-call branches, identical in both apart from spacing, are left out). */
static const char mistral_v3[] =
    "{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = messages[0][\"content\"] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if tools is not none and (message == user_messages[-1]) %}\n"
    "            {{- \"[AVAILABLE_TOOLS] [\" }}\n            {{- \"[/AVAILABLE_TOOLS]\" }}\n            {%- endif %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- else %}\n            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n"
    "    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- \" \" + message[\"content\"]|trim + eos_token}}\n"
    "    {%- endif %}\n{%- endfor %}\n";
static const char mistral_nemo[] =
    "{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = messages[0][\"content\"] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if tools is not none and (message == user_messages[-1]) %}\n"
    "            {{- \"[AVAILABLE_TOOLS][\" }}\n            {{- \"[/AVAILABLE_TOOLS]\" }}\n            {%- endif %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST]\" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- else %}\n            {{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n"
    "    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- message[\"content\"] + eos_token}}\n"
    "    {%- endif %}\n{%- endfor %}\n";

/* HuggingFaceH4/zephyr-7b-beta */
static const char zephyr_beta[] =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

/* google/gemma-2-2b-it */
static const char gemma2_it[] =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

/* Look-alikes we must not claim. microsoft/phi-4: */
static const char phi4[] =
    "{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + "
    "message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + "
    "message['content'] + '<|im_end|><|im_start|>assistant<|im_sep|>'}}{% elif (message['role'] == 'assistant') %}"
    "{{message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}";
/* mistralai/Mistral-Large-Instruct-2411 (v7): */
static const char mistral_v7[] =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
    "message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + "
    "message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + "
    "message['content'] + eos_token }}{% else %}{{ raise_exception('Only user, system and assistant roles are "
    "supported!') }}{% endif %}{% endfor %}";

static void check_detect(const char *text, chat_family want)
{
    chat_family got = chat_detect(text, strlen(text));
    ck_assert_msg(got == want, "detected %s, want %s for: %.80s...", chat_family_name(got), chat_family_name(want),
                  text);
}

START_TEST(detect_real_templates)
{
    check_detect(qwen25, CHAT_CHATML);
    check_detect(llama2_chat, CHAT_LLAMA2);
    check_detect(llama3_instruct, CHAT_LLAMA3);
    check_detect(mistral_v02_old, CHAT_MISTRAL);
    check_detect(mistral_v1, CHAT_MISTRAL);
    check_detect(mistral_v3, CHAT_MISTRAL_V3);
    check_detect(mistral_nemo, CHAT_MISTRAL_V3_TEKKEN);
    check_detect(zephyr_beta, CHAT_ZEPHYR);
    check_detect(gemma2_it, CHAT_GEMMA);
    check_detect(phi4, CHAT_UNKNOWN);
    check_detect(mistral_v7, CHAT_UNKNOWN);
    check_detect("{{ messages }}", CHAT_UNKNOWN);
    check_detect("", CHAT_UNKNOWN);
    ck_assert_int_eq(chat_detect(NULL, 5), CHAT_UNKNOWN);
}
END_TEST

/* The template is a borrowed, unterminated view into the file: detection must honour len. */
START_TEST(detect_honours_length)
{
    ck_assert_int_eq(chat_detect("<start_of_turn>", 14), CHAT_UNKNOWN);
    ck_assert_int_eq(chat_detect("<start_of_turn>", 15), CHAT_GEMMA);
}
END_TEST

START_TEST(detect_phi3_from_gguf)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-phi-3.gguf", shared_dir());
    gguf *g = NULL;
    err_info ei = {0};
    ck_assert_msg(gguf_open(&g, path, &ei) == 0, "%s: %s (set SHARED)", path, ei.msg);
    gguf_str t;
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.chat_template", &t, &ei), 0);
    ck_assert_int_eq(chat_detect(t.ptr, t.len), CHAT_PHI3);
    gguf_close(g);
}
END_TEST

START_TEST(family_names_round_trip)
{
    for (int f = CHAT_UNKNOWN + 1; f < CHAT_FAMILY_COUNT; f++) {
        const char *name = chat_family_name((chat_family)f);
        ck_assert_str_ne(name, "unknown");
        ck_assert_int_eq(chat_family_from_name(name), f);
        ck_assert_str_ne(chat_turn_end((chat_family)f), "");
    }
    ck_assert_str_eq(chat_family_name(CHAT_UNKNOWN), "unknown");
    ck_assert_str_eq(chat_family_name(CHAT_FAMILY_COUNT), "unknown");
    ck_assert_int_eq(chat_family_from_name("jinja"), CHAT_UNKNOWN);
    ck_assert_int_eq(chat_family_from_name(NULL), CHAT_UNKNOWN);
    ck_assert_str_eq(chat_turn_end(CHAT_UNKNOWN), "");
    ck_assert_str_eq(chat_turn_end(CHAT_CHATML), "<|im_end|>");
    ck_assert_str_eq(chat_turn_end(CHAT_LLAMA2), "</s>");
    ck_assert_str_eq(chat_turn_end(CHAT_LLAMA3), "<|eot_id|>");
    ck_assert_str_eq(chat_turn_end(CHAT_PHI3), "<|end|>");
    ck_assert_str_eq(chat_turn_end(CHAT_GEMMA), "<end_of_turn>");
}
END_TEST

/* ---- rendering ----------------------------------------------------------------------------- */

/* llama.cpp's test conversation; the padded answer shows which families strip. */
static const chat_msg conversation[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};
enum { N_CONV = sizeof conversation / sizeof conversation[0] };

static const struct golden {
    chat_family family;
    const char *text;
} goldens[] = {
    {CHAT_CHATML,
     "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
     "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n"
     "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n"
     "<|im_start|>assistant\n"},
    {CHAT_LLAMA2,
     "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] Who are you "
     "[/INST] I am an assistant </s><s>[INST] Another question [/INST]"},
    {CHAT_LLAMA3,
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
     "Hi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n"},
    {CHAT_MISTRAL,
     " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]    I am an "
     "assistant   </s> [INST] Another question [/INST]"},
    {CHAT_MISTRAL_V3,
     "[INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST] I am an assistant</s>[INST] You are a helpful "
     "assistant\n\nAnother question[/INST]"},
    {CHAT_MISTRAL_V3_TEKKEN,
     "[INST]Hello[/INST]Hi there</s>[INST]Who are you[/INST]   I am an assistant   </s>[INST]You are a helpful "
     "assistant\n\nAnother question[/INST]"},
    {CHAT_ZEPHYR,
     "<|system|>\nYou are a helpful assistant</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there</s>\n"
     "<|user|>\nWho are you</s>\n<|assistant|>\n   I am an assistant   </s>\n<|user|>\nAnother question</s>\n"
     "<|assistant|>\n"},
    {CHAT_PHI3,
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n"
     "<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   <|end|>\n<|user|>\nAnother question"
     "<|end|>\n<|assistant|>\n"},
    {CHAT_GEMMA,
     "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there"
     "<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant"
     "<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n"},
};
enum { N_GOLDENS = sizeof goldens / sizeof goldens[0] };

/* Renders and checks the result, its length and its terminator. */
static void check_render(chat_family f, const chat_msg *msgs, size_t n, bool add_assistant, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    err_info ei = {0};
    int rc = chat_render(f, msgs, n, add_assistant, &out, &len, &ei);
    ck_assert_msg(rc == 0, "%s: rc %d (%s)", chat_family_name(f), rc, ei.msg);
    ck_assert_msg(strcmp(out, want) == 0, "%s:\n got  [%s]\n want [%s]", chat_family_name(f), out, want);
    ck_assert_uint_eq(len, strlen(want));
    free(out);
}

START_TEST(render_golden)
{
    check_render(goldens[_i].family, conversation, N_CONV, true, goldens[_i].text);
}
END_TEST

START_TEST(render_every_family_has_a_golden)
{
    for (int f = CHAT_UNKNOWN + 1; f < CHAT_FAMILY_COUNT; f++) {
        int found = 0;
        for (int i = 0; i < N_GOLDENS; i++)
            found |= goldens[i].family == (chat_family)f;
        ck_assert_msg(found, "no golden for %s", chat_family_name((chat_family)f));
    }
}
END_TEST

START_TEST(render_without_generation_prompt)
{
    const chat_msg m[] = {{"user", "Hi"}, {"assistant", "Hello!"}};
    check_render(CHAT_CHATML, m, 2, false, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n");
    check_render(CHAT_LLAMA3, m, 2, false,
                 "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>");
    /* [INST] families: the user turn already opens the answer either way. */
    const chat_msg u[] = {{"user", "Hi"}};
    check_render(CHAT_LLAMA2, u, 1, false, "[INST] Hi [/INST]");
    check_render(CHAT_LLAMA2, u, 1, true, "[INST] Hi [/INST]");
    check_render(CHAT_MISTRAL, u, 1, true, " [INST] Hi [/INST]");
    check_render(CHAT_CHATML, NULL, 0, true, "<|im_start|>assistant\n");
    check_render(CHAT_LLAMA2, NULL, 0, true, "");
}
END_TEST

/* Python's str.strip() also removes Unicode spaces; inner whitespace stays. */
START_TEST(render_strips_like_python)
{
    const chat_msg m[] = {{"user", "\xc2\xa0\t hi  there \xe3\x80\x80\n"}};
    check_render(CHAT_LLAMA3, m, 1, false, "<|start_header_id|>user<|end_header_id|>\n\nhi  there<|eot_id|>");
    check_render(CHAT_GEMMA, m, 1, false, "<start_of_turn>user\nhi  there<end_of_turn>\n");
    check_render(CHAT_CHATML, m, 1, false, "<|im_start|>user\n\xc2\xa0\t hi  there \xe3\x80\x80\n<|im_end|>\n");
    /* A multi-byte character that merely ends in a space-like byte is content. */
    const chat_msg e[] = {{"assistant", " \xe2\x82\xa0 "}};  /* U+20A0 */
    check_render(CHAT_LLAMA3, e, 1, false, "<|start_header_id|>assistant<|end_header_id|>\n\n\xe2\x82\xa0<|eot_id|>");
    /* Llama 2 strips the user message together with its <<SYS>> block: an empty message
     * loses the blank line after the block. */
    const chat_msg s[] = {{"system", "S"}, {"user", "  "}};
    check_render(CHAT_LLAMA2, s, 2, true, "[INST] <<SYS>>\nS\n<</SYS>> [/INST]");
}
END_TEST

START_TEST(render_system_placement)
{
    /* Several system messages are joined; the text lands in the next user turn. */
    const chat_msg two[] = {{"system", "A"}, {"system", "B"}, {"user", "Q"}};
    check_render(CHAT_GEMMA, two, 3, true, "<start_of_turn>user\nA\n\nB\n\nQ<end_of_turn>\n<start_of_turn>model\n");
    check_render(CHAT_LLAMA2, two, 3, true, "[INST] <<SYS>>\nA\n\nB\n<</SYS>>\n\nQ [/INST]");
    /* A system message without a user message after it gets a user turn of its own. */
    const chat_msg only[] = {{"system", "Be brief."}};
    check_render(CHAT_GEMMA, only, 1, true, "<start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>model\n");
    check_render(CHAT_MISTRAL_V3, only, 1, true, "[INST] Be brief.\n\n[/INST]");
    const chat_msg late[] = {{"user", "Q"}, {"assistant", "A"}, {"system", "S"}};
    check_render(CHAT_LLAMA2, late, 3, true, "[INST] Q [/INST] A </s><s>[INST] <<SYS>>\nS\n<</SYS>> [/INST]");
    /* Mistral v3 always carries it in the last user message, wherever it was given. */
    const chat_msg mid[] = {{"user", "Q1"}, {"system", "S"}, {"user", "Q2"}, {"assistant", "A2"}};
    check_render(CHAT_MISTRAL_V3, mid, 4, true, "[INST] Q1[/INST][INST] S\n\nQ2[/INST] A2</s>");
    /* Families with a system turn keep it where it is. */
    check_render(CHAT_PHI3, mid, 4, false,
                 "<|user|>\nQ1<|end|>\n<|system|>\nS<|end|>\n<|user|>\nQ2<|end|>\n<|assistant|>\nA2<|end|>\n");
}
END_TEST

START_TEST(render_rejects_bad_input)
{
    char *out = (char *)"untouched";
    size_t len = 7;
    err_info ei = {0};
    const chat_msg bad[] = {{"user", "hi"}, {"assistant", "yo"}, {"tool", "{}"}};
    ck_assert_int_eq(chat_render(CHAT_CHATML, bad, 3, true, &out, &len, &ei), -EINVAL);
    ck_assert_msg(strstr(ei.msg, "message 2") && strstr(ei.msg, "tool"), "message: %s", ei.msg);
    ck_assert_str_eq(out, "untouched");
    ck_assert_uint_eq(len, 7);

    const chat_msg no_content[] = {{"user", NULL}};
    ck_assert_int_eq(chat_render(CHAT_CHATML, no_content, 1, true, &out, &len, &ei), -EINVAL);
    ck_assert_msg(strstr(ei.msg, "message 0"), "message: %s", ei.msg);

    ck_assert_int_eq(chat_render(CHAT_UNKNOWN, conversation, N_CONV, true, &out, &len, &ei), -ERR_UNSUPPORTED);
    ck_assert_int_eq(chat_render(CHAT_FAMILY_COUNT, conversation, N_CONV, true, &out, &len, &ei), -ERR_UNSUPPORTED);
    ck_assert_int_eq(chat_render(CHAT_CHATML, NULL, 2, true, &out, &len, &ei), -EINVAL);
    ck_assert_int_eq(chat_render(CHAT_CHATML, conversation, N_CONV, true, NULL, &len, &ei), -EINVAL);
}
END_TEST

static Suite *chat_suite(void)
{
    Suite *s = suite_create("chat");
    TCase *tc = tcase_create("detect");
    tcase_add_test(tc, detect_real_templates);
    tcase_add_test(tc, detect_honours_length);
    tcase_add_test(tc, detect_phi3_from_gguf);
    tcase_add_test(tc, family_names_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("render");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, render_golden, 0, N_GOLDENS);
    tcase_add_test(tc, render_every_family_has_a_golden);
    tcase_add_test(tc, render_without_generation_prompt);
    tcase_add_test(tc, render_strips_like_python);
    tcase_add_test(tc, render_system_placement);
    tcase_add_test(tc, render_rejects_bad_input);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(chat_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
