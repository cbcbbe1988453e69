/* test_tok_mdwe — the tokenizer under the unit's MemoryDenyWriteExecute=yes. PCRE2's JIT
 * needs memory that is writable and executable; W^X refuses it, and tok_pre.c must then
 * fall back to PCRE2's interpreter with identical results rather than fail. systemd
 * enforces the setting two ways, and each is reproduced in a child process:
 *   - prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN) (Linux 6.3+, used by newer systemd);
 *   - the seccomp filter systemd installs otherwise (systemd.exec(5)): mmap with PROT_WRITE
 *     and PROT_EXEC together, mprotect/pkey_mprotect adding PROT_EXEC fail with EPERM.
 * Each child first proves the restriction bites (JIT compilation fails where, unrestricted,
 * it works), then runs the llama.cpp vectors of three regex pre-tokenizers. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <check.h>
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/tok.h"
#include "tests/testutil.h"

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

#if defined(__x86_64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

enum { UNRESTRICTED, MDWE_PRCTL, MDWE_SECCOMP };

#ifdef NATIVE_AUDIT_ARCH
/* systemd's MemoryDenyWriteExecute= filter, for this architecture. */
static int install_wx_filter(void)
{
    enum { ALLOW = 13, DENY = 14 }; /* instruction indexes; jumps are relative to the next one */
    struct sock_filter f[] = {
        /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_AUDIT_ARCH, 0, ALLOW - 2),
        /* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 0, 8 - 4),
        /* 4 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])), /* prot, low half */
        /* 5 */ BPF_STMT(BPF_ALU | BPF_AND | BPF_K, PROT_WRITE | PROT_EXEC),
        /* 6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROT_WRITE | PROT_EXEC, DENY - 7, ALLOW - 7),
        /* 7 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* 8 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 10 - 9, 0),
        /* 9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pkey_mprotect, 0, ALLOW - 10),
        /* 10 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
        /* 11 */ BPF_STMT(BPF_ALU | BPF_AND | BPF_K, PROT_EXEC),
        /* 12 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROT_EXEC, DENY - 13, ALLOW - 13),
        /* 13 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* 14 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}
#endif

static int restrict_wx(int how)
{
    switch (how) {
    case MDWE_PRCTL: return prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0);
#ifdef NATIVE_AUDIT_ARCH
    case MDWE_SECCOMP: return install_wx_filter();
#endif
    case UNRESTRICTED: return 0;
    default: errno = ENOSYS; return -1;
    }
}

static bool jit_compiles(void)
{
    int code;
    PCRE2_SIZE at;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR) "\\p{L}+|\\s+", PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    bool ok = re && pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    pcre2_code_free(re);
    return ok;
}

/* The pre-tokenizers under test, and their llama.cpp vectors (read by the parent, so the
 * child does nothing but load and tokenize). */
static const char *const vocabs[] = {"gpt-2", "gpt-2-pre-llama-bpe", "gpt-2-pre-qwen2"};
enum { N_VOCABS = sizeof vocabs / sizeof vocabs[0] };
static char *inputs[N_VOCABS], *outputs[N_VOCABS];

/* $SHARED/tokenizer/ggml-vocab-NAME.gguf + suffix, whole and NUL-terminated. */
static char *read_vector_file(const char *name, const char *suffix)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-%s.gguf%s", shared_dir(), name, suffix);
    size_t n;
    char *text = (char *)slurp(path, &n);
    text = realloc(text, n + 1);
    ck_assert_ptr_nonnull(text);
    text[n] = 0;
    return text;
}

/* Runs the vectors of vocabs[k]; 0 when every string tokenizes as llama.cpp's. */
static int run_vectors(size_t k)
{
    const char *name = vocabs[k];
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-%s.gguf", shared_dir(), name);
    gguf *g;
    tok_vocab *v;
    err_info ei = {0};
    if (gguf_open(&g, path, &ei) || tok_load(&v, g, &ei)) {
        fprintf(stderr, "%s: %s\n", path, ei.msg);
        return 1;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    int rc = 0, count = 0;
    char *text = inputs[k], *line = outputs[k];
    for (char *end; !rc && (end = strstr(text, sep)); text = end + strlen(sep), count++) {
        char *eol = strchr(line, '\n');
        int32_t ids[4096];
        int n;
        if (!eol || tok_encode(v, text, (size_t)(end - text), false, false, ids, 4096, &n)) {
            fprintf(stderr, "%s string %d: could not be tokenized\n", name, count);
            rc = 1;
            break;
        }
        *eol = 0;
        char got[16384];
        size_t at = 0;
        for (int i = 0; i < n && at < sizeof got - 16; i++)
            at += (size_t)snprintf(got + at, sizeof got - at, " %d", ids[i]);
        got[at] = 0;
        if (strcmp(got, line)) {
            fprintf(stderr, "%s string %d: expected '%s', got '%s'\n", name, count, line, got);
            rc = 1;
        }
        line = eol + 1;
    }
    if (!rc && count == 0)
        rc = 1;
    tok_free(v);
    gguf_close(g);
    return rc;
}

/* The child's whole job; its exit status says what went wrong. */
static int tokenize_restricted(int how)
{
    if (restrict_wx(how)) {
        fprintf(stderr, "cannot restrict W^X (%d): %s\n", how, strerror(errno));
        return 3;
    }
    /* a restriction that lets the JIT through would prove nothing; and unrestricted, the JIT
     * must work, or the fallback is never exercised */
    if (jit_compiles() != (how == UNRESTRICTED)) {
        fprintf(stderr, how == UNRESTRICTED ? "PCRE2 JIT does not work even unrestricted\n"
                                            : "PCRE2 JIT compiled although W^X memory is refused\n");
        return 4;
    }
    for (size_t k = 0; k < N_VOCABS; k++)
        if (run_vectors(k))
            return 1;
    return 0;
}

START_TEST(tokenizer_without_jit_memory)
{
#ifndef NATIVE_AUDIT_ARCH
    if (_i == MDWE_SECCOMP)
        return; /* the filter is written for x86-64 and aarch64 only */
#endif
    uint32_t has_jit = 0;
    pcre2_config(PCRE2_CONFIG_JIT, &has_jit);
    ck_assert_msg(has_jit, "this PCRE2 has no JIT: nothing to fall back from");
    for (size_t k = 0; k < N_VOCABS; k++) {
        inputs[k] = read_vector_file(vocabs[k], ".inp");
        outputs[k] = read_vector_file(vocabs[k], ".out");
    }
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        fflush(stderr);
        _exit(tokenize_restricted(_i));
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    for (size_t k = 0; k < N_VOCABS; k++) {
        free(inputs[k]);
        free(outputs[k]);
    }
    if (_i == MDWE_PRCTL && WIFEXITED(status) && WEXITSTATUS(status) == 3) {
        /* kernels before 6.3 have no PR_SET_MDWE; systemd then uses the seccomp filter */
        fprintf(stderr, "PR_SET_MDWE is not supported by this kernel; the seccomp case covers it\n");
        return;
    }
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "restriction %d: child status %#x (see stderr)", _i,
                  status);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tok_mdwe");
    TCase *tc = tcase_create("mdwe");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, tokenizer_without_jit_memory, UNRESTRICTED, MDWE_SECCOMP + 1);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
