/* test_api_req — api/req.c: every field of the chat, completion, tokenize and detokenize
 * bodies is read; every wrong type or range is refused with a message naming the field;
 * unknown fields and nulls are ignored as OpenAI does. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/req.h"

static api_req *parse_ok(api_kind kind, const char *body)
{
    api_req *r = NULL;
    err_info ei = {0};
    int rc = api_req_parse(&r, kind, body, strlen(body), &ei);
    ck_assert_msg(rc == 0, "'%s' refused: %s", body, ei.msg);
    return r;
}

/* Parses body expecting failure with code, and the message containing needle. */
static void parse_bad(api_kind kind, const char *body, int code, const char *needle)
{
    api_req *r = (api_req *)1;
    err_info ei = {0};
    int rc = api_req_parse(&r, kind, body, strlen(body), &ei);
    ck_assert_msg(rc == code, "'%s': rc %d, expected %d (%s)", body, rc, code, ei.msg);
    ck_assert_ptr_null(r);
    ck_assert_msg(strstr(ei.msg, needle), "'%s': message '%s' does not name '%s'", body, ei.msg, needle);
}

START_TEST(chat_every_field)
{
    api_req *r = parse_ok(API_KIND_CHAT,
                          "{\"model\":\"m1\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                          "{\"role\":\"user\",\"content\":\"hi \\u00e9\"},{\"role\":\"assistant\",\"content\":null}],"
                          "\"max_tokens\":12,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":7,\"min_p\":0.1,"
                          "\"repeat_penalty\":1.1,\"presence_penalty\":-0.5,\"frequency_penalty\":1.5,\"seed\":42,"
                          "\"stop\":[\"END\",\"\\n\\n\"],\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                          "\"timeout\":2.5,\"n\":1,\"user\":\"ignored\",\"logit_bias\":{\"1\":2},\"tools\":[]}");
    ck_assert_int_eq(r->kind, API_KIND_CHAT);
    ck_assert_str_eq(r->model, "m1");
    ck_assert_uint_eq(r->n_msgs, 3);
    ck_assert_str_eq(r->msgs[0].role, "system");
    ck_assert_str_eq(r->msgs[0].content, "be brief");
    ck_assert_str_eq(r->msgs[1].content, "hi \xc3\xa9");
    ck_assert_str_eq(r->msgs[2].role, "assistant");
    ck_assert_str_eq(r->msgs[2].content, "");
    ck_assert_int_eq(r->max_tokens, 12);
    ck_assert_float_eq_tol(r->sampling.temperature, 0.5f, 1e-6);
    ck_assert_float_eq_tol(r->sampling.top_p, 0.9f, 1e-6);
    ck_assert_int_eq(r->sampling.top_k, 7);
    ck_assert_float_eq_tol(r->sampling.min_p, 0.1f, 1e-6);
    ck_assert_float_eq_tol(r->sampling.repeat_penalty, 1.1f, 1e-6);
    ck_assert_float_eq_tol(r->sampling.presence_penalty, -0.5f, 1e-6);
    ck_assert_float_eq_tol(r->sampling.frequency_penalty, 1.5f, 1e-6);
    ck_assert(r->seed_set);
    ck_assert_uint_eq(r->sampling.seed, 42);
    ck_assert_int_eq(r->n_stop, 2);
    ck_assert_str_eq(r->stop[0], "END");
    ck_assert_str_eq(r->stop[1], "\n\n");
    ck_assert(r->stream);
    ck_assert(r->include_usage);
    ck_assert_double_eq_tol(r->timeout_s, 2.5, 1e-6);
    api_req_free(r);
}
END_TEST

START_TEST(defaults_and_nulls)
{
    sampler_params d;
    sampler_params_default(&d);
    api_req *r = parse_ok(API_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":null,"
                                         "\"stop\":null,\"max_tokens\":null,\"stream\":null,\"seed\":null}");
    ck_assert_str_eq(r->model, "");
    ck_assert_int_eq(r->max_tokens, 0);
    ck_assert_float_eq(r->sampling.temperature, d.temperature);
    ck_assert_int_eq(r->sampling.top_k, d.top_k);
    ck_assert(!r->seed_set);
    ck_assert_int_eq(r->n_stop, 0);
    ck_assert(!r->stream);
    ck_assert(!r->include_usage);
    ck_assert_double_eq(r->timeout_s, 0);
    api_req_free(r);
}
END_TEST

START_TEST(content_parts_are_joined)
{
    api_req *r = parse_ok(API_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"ab\"},"
                                         "{\"type\":\"text\",\"text\":\"cd\"}]}]}");
    ck_assert_str_eq(r->msgs[0].content, "abcd");
    api_req_free(r);
    parse_bad(API_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", -EINVAL,
              "messages[0].content[0]");
}
END_TEST

START_TEST(completion_prompt_forms)
{
    api_req *r = parse_ok(API_KIND_COMPLETION, "{\"prompt\":\"Once upon\",\"stop\":\"x\",\"max_completion_tokens\":3}");
    ck_assert_str_eq(r->prompt, "Once upon");
    ck_assert_uint_eq(r->prompt_len, 9);
    ck_assert_int_eq(r->n_stop, 1);
    ck_assert_str_eq(r->stop[0], "x");
    ck_assert_int_eq(r->max_tokens, 3);
    api_req_free(r);
    r = parse_ok(API_KIND_COMPLETION, "{\"prompt\":[\"only one\"]}");
    ck_assert_str_eq(r->prompt, "only one");
    api_req_free(r);
    parse_bad(API_KIND_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", -ERR_TYPE, "'prompt'");
    parse_bad(API_KIND_COMPLETION, "{\"prompt\":[1,2,3]}", -ERR_TYPE, "'prompt'");
    parse_bad(API_KIND_COMPLETION, "{}", -EINVAL, "'prompt' is required");
    parse_bad(API_KIND_COMPLETION, "{\"prompt\":5}", -ERR_TYPE, "'prompt'");
}
END_TEST

START_TEST(bad_types_and_ranges_name_the_field)
{
    static const struct {
        const char *extra;  /* appended to a valid chat body */
        int code;
        const char *field;
    } cases[] = {
        {"\"model\":3", -ERR_TYPE, "'model'"},
        {"\"max_tokens\":\"10\"", -ERR_TYPE, "'max_tokens'"},
        {"\"max_tokens\":1.5", -ERR_TYPE, "'max_tokens'"},
        {"\"max_tokens\":0", -ERR_RANGE, "'max_tokens'"},
        {"\"max_completion_tokens\":-3", -ERR_RANGE, "'max_completion_tokens'"},
        {"\"temperature\":\"hot\"", -ERR_TYPE, "'temperature'"},
        {"\"temperature\":2.5", -ERR_RANGE, "'temperature'"},
        {"\"temperature\":-0.1", -ERR_RANGE, "'temperature'"},
        {"\"top_p\":1.5", -ERR_RANGE, "'top_p'"},
        {"\"top_p\":0", -EINVAL, "top_p"},  /* the sampler's own check: (0, 1] */
        {"\"top_k\":-1", -ERR_RANGE, "'top_k'"},
        {"\"top_k\":2.5", -ERR_TYPE, "'top_k'"},
        {"\"min_p\":true", -ERR_TYPE, "'min_p'"},
        {"\"repeat_penalty\":-1", -ERR_RANGE, "'repeat_penalty'"},
        {"\"presence_penalty\":3", -ERR_RANGE, "'presence_penalty'"},
        {"\"frequency_penalty\":-2.01", -ERR_RANGE, "'frequency_penalty'"},
        {"\"seed\":\"42\"", -ERR_TYPE, "'seed'"},
        {"\"seed\":0.5", -ERR_TYPE, "'seed'"},
        {"\"stop\":5", -EINVAL, "'stop'"},
        {"\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", -EINVAL, "'stop'"},
        {"\"stop\":[\"a\",7]", -ERR_TYPE, "'stop[1]'"},
        {"\"stop\":[\"\"]", -ERR_TYPE, "'stop[0]'"},
        {"\"stop\":\"\"", -EINVAL, "'stop' must be a non-empty string"},
        {"\"stream\":\"yes\"", -ERR_TYPE, "'stream'"},
        {"\"stream_options\":true", -ERR_TYPE, "'stream_options'"},
        {"\"stream_options\":{\"include_usage\":1}", -ERR_TYPE, "'stream_options.include_usage'"},
        {"\"timeout\":0", -ERR_RANGE, "'timeout'"},
        {"\"timeout\":\"1s\"", -ERR_TYPE, "'timeout'"},
        {"\"n\":2", -ERR_RANGE, "'n' must be 1"},
        {"\"edgellm\":\"cloud\"", -ERR_TYPE, "'edgellm'"},
        {"\"edgellm\":{\"route\":\"moon\"}", -EINVAL, "'edgellm.route'"},
        {"\"edgellm\":{\"route\":1}", -ERR_TYPE, "'edgellm.route'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],%s}", cases[i].extra);
        parse_bad(API_KIND_CHAT, body, cases[i].code, cases[i].field);
    }
}
END_TEST

START_TEST(bad_messages)
{
    parse_bad(API_KIND_CHAT, "{}", -EINVAL, "'messages'");
    parse_bad(API_KIND_CHAT, "{\"messages\":[]}", -ERR_TYPE, "'messages'");
    parse_bad(API_KIND_CHAT, "{\"messages\":\"hi\"}", -ERR_TYPE, "'messages'");
    parse_bad(API_KIND_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", -ERR_TYPE, "'messages[0].role'");
    parse_bad(API_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},\"oops\"]}", -ERR_TYPE,
              "'messages[1].role'");
    parse_bad(API_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":42}]}", -ERR_TYPE,
              "'messages[0].content'");
}
END_TEST

START_TEST(not_json)
{
    parse_bad(API_KIND_CHAT, "", -ERR_FORMAT, "not a JSON object");
    parse_bad(API_KIND_CHAT, "{\"messages\":", -ERR_FORMAT, "not a JSON object");
    parse_bad(API_KIND_CHAT, "[1]", -ERR_FORMAT, "not a JSON object");
    parse_bad(API_KIND_COMPLETION, "\"prompt\"", -ERR_FORMAT, "not a JSON object");
    /* one JSON text: a second value, or any byte but white space, after the object is refused
     * (cJSON alone stops after the first and ignored the rest) */
    parse_bad(API_KIND_COMPLETION, "{\"prompt\":\"a\"} {\"prompt\":\"b\"}", -ERR_FORMAT, "more after its JSON object (at byte 15)");
    parse_bad(API_KIND_COMPLETION, "{\"prompt\":\"a\"}x", -ERR_FORMAT, "more after its JSON object");
    api_req *ok = parse_ok(API_KIND_COMPLETION, " \r\n{\"prompt\":\"a\"} \t\r\n");
    api_req_free(ok);
    api_req *with_nul = NULL;
    ck_assert_int_eq(api_req_parse(&with_nul, API_KIND_COMPLETION, "{\"prompt\":\"a\"}\0", 15, NULL), -ERR_FORMAT);
    /* length is honoured: the bytes after len are not part of the body */
    api_req *r = NULL;
    const char *body = "{\"prompt\":\"a\"}GARBAGE";
    ck_assert_int_eq(api_req_parse(&r, API_KIND_COMPLETION, body, 14, NULL), 0);
    api_req_free(r);
}
END_TEST

START_TEST(tokenize_and_detokenize)
{
    api_req *r = parse_ok(API_KIND_TOKENIZE, "{\"content\":\"hello\"}");
    ck_assert_str_eq(r->prompt, "hello");
    ck_assert(!r->add_special);
    ck_assert(r->parse_special);
    ck_assert(!r->with_pieces);
    api_req_free(r);
    r = parse_ok(API_KIND_TOKENIZE, "{\"content\":\"x\",\"add_special\":true,\"parse_special\":false,\"with_pieces\":true}");
    ck_assert(r->add_special && !r->parse_special && r->with_pieces);
    api_req_free(r);
    parse_bad(API_KIND_TOKENIZE, "{}", -EINVAL, "'content'");
    parse_bad(API_KIND_TOKENIZE, "{\"content\":\"x\",\"with_pieces\":1}", -ERR_TYPE, "'with_pieces'");

    r = parse_ok(API_KIND_DETOKENIZE, "{\"tokens\":[1,2,30000]}");
    ck_assert_uint_eq(r->n_tokens, 3);
    ck_assert_int_eq(r->tokens[2], 30000);
    api_req_free(r);
    r = parse_ok(API_KIND_DETOKENIZE, "{\"tokens\":[]}");
    ck_assert_uint_eq(r->n_tokens, 0);
    api_req_free(r);
    parse_bad(API_KIND_DETOKENIZE, "{}", -EINVAL, "'tokens'");
    parse_bad(API_KIND_DETOKENIZE, "{\"tokens\":[1,-2]}", -ERR_TYPE, "'tokens[1]'");
    parse_bad(API_KIND_DETOKENIZE, "{\"tokens\":[1,\"2\"]}", -ERR_TYPE, "'tokens[1]'");
    parse_bad(API_KIND_DETOKENIZE, "{\"tokens\":[1e12]}", -ERR_TYPE, "'tokens[0]'");
}
END_TEST

START_TEST(route_field)
{
    static const struct { const char *extra; api_target want; } cases[] = {
        {"", API_TARGET_AUTO},
        {",\"edgellm\":null", API_TARGET_AUTO},
        {",\"edgellm\":{}", API_TARGET_AUTO},
        {",\"edgellm\":{\"route\":\"auto\"}", API_TARGET_AUTO},
        {",\"edgellm\":{\"route\":\"local\"}", API_TARGET_LOCAL},
        {",\"edgellm\":{\"route\":\"cloud\"}", API_TARGET_CLOUD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"prompt\":\"x\"%s}", cases[i].extra);
        api_req *r = parse_ok(API_KIND_COMPLETION, body);
        ck_assert_msg(r->target == cases[i].want, "%s: target %d", body, r->target);
        api_req_free(r);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api_req");
    TCase *tc = tcase_create("api_req");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, chat_every_field);
    tcase_add_test(tc, defaults_and_nulls);
    tcase_add_test(tc, content_parts_are_joined);
    tcase_add_test(tc, completion_prompt_forms);
    tcase_add_test(tc, bad_types_and_ranges_name_the_field);
    tcase_add_test(tc, bad_messages);
    tcase_add_test(tc, not_json);
    tcase_add_test(tc, tokenize_and_detokenize);
    tcase_add_test(tc, route_field);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
