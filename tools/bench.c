/* edgellm bench — prefill and decode speed of the local engine on one model, measured the
 * way llama-bench does (pp: N prompt tokens into an empty context in one call; tg: N
 * single-token steps from an empty context; with -d D both after a context of D tokens,
 * where attention's share shows), plus load time, time to ready (load and the
 * first prefill: what a restart costs before the first answer), resident memory, time to
 * first token, and (with --bandwidth) the machine's read bandwidth, which bounds decode.
 * With --pss it instead starts two processes on the model, runs a prompt in each and
 * reports their proportional memory, to show what sharing the weights saves.
 *
 * Not a profiler: it times whole eval calls. Reports the median of the repeats with the
 * min-max range, because these machines are noisy. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/cli.h"
#include "daemon/cli_engine.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/pool.h"

#define USAGE CLI_ENGINE_USAGE " [-p N_PROMPT] [-n N_GEN] [-d DEPTH] [-r REPEATS] [--json] [--bandwidth] [--pss]"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Resident set size of this process in bytes (from /proc/self/statm). */
static long long rss_bytes(void)
{
    long pages_total, pages_rss;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    int ok = fscanf(f, "%ld %ld", &pages_total, &pages_rss) == 2;
    fclose(f);
    return ok ? (long long)pages_rss * 4096 : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct stat3 {
    double median, min, max;
} stat3;

static stat3 summarize(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    stat3 s = {n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v[0], v[n - 1]};
    return s;
}

/* ---- read-bandwidth probe: what decode can at most stream ---------------------------
 * The pool's threads read a buffer far larger than the last-level cache in 4 MiB chunks,
 * each chunk one sequential stream (as a strip of weight rows is), with 16-byte vector
 * loads summed so that the reads cannot be dropped (every x86-64 and aarch64 has them
 * without target flags, and wider ones stream no faster from DRAM). Chunks are claimed as
 * the forward pass claims rows, so a thread the OS preempts slows a pass no more than it
 * slows decode. A probe's figure is its best pass over two access patterns: plain loads,
 * which the hardware prefetchers follow, and loads led by software prefetches a few KiB
 * ahead, as the gemm kernels issue them (kern_tile.h); which streams faster depends on the
 * CPU. The buffer asks for transparent huge pages, so that TLB misses do not count
 * against the memory. A shared machine's bandwidth changes by the second (other tenants,
 * other cores' traffic), so the bench probes right after each decode run and compares the
 * two per run. */
typedef uint64_t bw_vec __attribute__((vector_size(16)));

enum { BW_CHUNK = 4 << 20, BW_CHUNKS = 256, BW_PREFETCH_AHEAD = 2048, BW_PASSES = 3 };
#define BW_BYTES ((size_t)BW_CHUNK * BW_CHUNKS) /* 1 GiB: 32 times the L3 of a large edge box */

typedef struct bw_job {
    const uint8_t *buf; /* BW_BYTES */
    bool prefetch;
    bw_vec sums[256]; /* by pool slot: where each thread leaves what it read */
} bw_job;

/* Reads chunks [b, e), one stream. */
static void bw_worker(void *ctx, int b, int e, int slot)
{
    bw_job *j = ctx;
    const bw_vec *p = (const bw_vec *)(j->buf + (size_t)b * BW_CHUNK);
    const bw_vec *end = (const bw_vec *)(j->buf + (size_t)e * BW_CHUNK);
    bw_vec s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (; p < end; p += 4) { /* a 64-byte line per step */
        if (j->prefetch)
            __builtin_prefetch((const uint8_t *)p + BW_PREFETCH_AHEAD, 0, 2);
        s0 += p[0];
        s1 += p[1];
        s2 += p[2];
        s3 += p[3];
    }
    j->sums[slot] += s0 + s1 + s2 + s3;
}

/* The probe's buffer, every page faulted in; MAP_FAILED when it cannot be had. */
static uint8_t *bw_buffer(void)
{
    uint8_t *buf = mmap(NULL, BW_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf != MAP_FAILED) {
        madvise(buf, BW_BYTES, MADV_HUGEPAGE); /* a hint: no harm where THP is off */
        memset(buf, 1, BW_BYTES);
    }
    return buf;
}

/* Best read bandwidth of the pool's threads together over buf (from bw_buffer), in GB/s. */
static double read_bandwidth_gbs(pool *pl, const uint8_t *buf)
{
    static bw_job j; /* 4 KiB of sums: not for the stack */
    j = (bw_job){.buf = buf};
    double best = 0;
    for (int pass = 0; pass < 2 * BW_PASSES; pass++) {
        j.prefetch = pass % 2;
        const double t = now_s();
        pool_for(pl, BW_CHUNKS, 1, bw_worker, &j);
        const double gbs = BW_BYTES / (now_s() - t) / 1e9;
        if (gbs > best)
            best = gbs;
    }
    return best;
}

/* Bytes one decode step reads: every tensor once, except the token embeddings, of which it
 * reads one row, unless they double as the output matrix (no output.weight). */
static double decode_bytes(const model *m)
{
    const gguf *g = model_gguf(m);
    const gguf_tensor *embd = gguf_find_tensor(g, "token_embd.weight");
    double bytes = (double)model_weight_bytes(m);
    if (embd && gguf_find_tensor(g, "output.weight"))
        bytes -= (double)embd->nbytes - (double)embd->nbytes / (double)embd->ne[1];
    return bytes;
}

/* Bytes of keys and values one decode step reads at n_keys positions. */
static double kv_bytes(const model_hparams *hp, qt_type kv_type, double n_keys)
{
    return 2.0 * hp->n_layer * (double)qt_row_bytes(kv_type, hp->n_head_kv * hp->head_dim) * n_keys;
}

typedef struct bench_opts {
    cli_engine_opts engine;
    int n_prompt, n_gen, n_depth, repeats;
    bool json, bandwidth, pss;
} bench_opts;

/* n token ids drawn from a fixed seed, so every run and process feeds the same prompt. */
static int32_t *random_tokens(int n, int32_t n_vocab)
{
    int32_t *t = malloc((size_t)n * sizeof *t);
    srand(1234);
    for (int i = 0; t && i < n; i++)
        t[i] = rand() % n_vocab;
    return t;
}

/* Where the weights came from, for the report. */
static const char *weights_source(const cli_engine *e)
{
    return !e->ms ? "file mapping" : mstore_created(e->ms) ? "shared memory, copied now (cold)"
                                                           : "shared memory, attached (warm)";
}

/* Share of the shared copy mapped in 2 MiB pages once the runs have touched every weight
 * (mstore_huge_bytes), -1 for a file mapping or when it cannot be told. */
static double huge_page_share(const cli_engine *e)
{
    const int64_t huge = e->ms ? mstore_huge_bytes(e->ms) : -1;
    return huge < 0 ? -1 : (double)huge / (double)mstore_size(e->ms);
}

/* ---- --pss: two processes on one model --------------------------------------------------- */

/* Memory of process pid in KiB, from /proc/pid/smaps_rollup. */
typedef struct rollup {
    long rss, pss, pss_anon, pss_file, pss_shmem;
} rollup;

static int read_rollup(pid_t pid, rollup *r)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    *r = (rollup){0};
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "Rss: %ld", &r->rss);
        sscanf(line, "Pss: %ld", &r->pss);
        sscanf(line, "Pss_Anon: %ld", &r->pss_anon);
        sscanf(line, "Pss_File: %ld", &r->pss_file);
        sscanf(line, "Pss_Shmem: %ld", &r->pss_shmem);
    }
    fclose(f);
    return 0;
}

/* A child: opens the model, runs the prompt, says so on ready, and holds everything until
 * the parent closes done. Exit status 0 when all went well. */
static int pss_child(const bench_opts *o, int ready, int done)
{
    cli_engine e;
    err_info ei = {0};
    char ok = 0, c;
    int rc = cli_engine_open(&e, &o->engine, &ei);
    bool opened = rc == 0;
    if (opened) {
        int32_t *toks = random_tokens(o->n_prompt, model_hparams_of(e.m)->n_vocab);
        rc = toks ? model_session_eval(e.s, toks, o->n_prompt, NULL, false, NULL, &ei) : -ENOMEM;
        free(toks);
        ok = rc == 0;
    }
    if (rc)
        cli_fail("bench", &ei, rc);
    if (write(ready, &ok, 1) != 1 || read(done, &c, 1) < 0)
        rc = -EIO;
    if (opened)
        cli_engine_close(&e);
    return rc ? 1 : 0;
}

static int pss_report(const bench_opts *o)
{
    enum { N = 2 };
    int ready[2], done[2], rc = 0, n = 0;
    pid_t kids[N];
    if (pipe(ready) || pipe(done)) {
        perror("edgellm bench: pipe");
        return 1;
    }
    fflush(stdout);
    for (; n < N; n++) {
        if ((kids[n] = fork()) < 0) {
            perror("edgellm bench: fork");
            rc = 1;
            break;
        }
        if (kids[n] == 0) {
            close(ready[0]);
            close(done[1]); /* else the child's own copy keeps done from ever closing */
            _exit(pss_child(o, ready[1], done[0]));
        }
    }
    close(ready[1]);
    close(done[0]);
    for (int i = 0; i < n; i++) {
        char ok = 0;
        if (read(ready[0], &ok, 1) != 1 || !ok)
            rc = 1;
    }
    for (int i = 0; i < n && !rc; i++) {
        rollup r;
        if (read_rollup(kids[i], &r)) {
            rc = 1;
            break;
        }
        printf("process %d: RSS %.1f MiB, PSS %.1f MiB (anon %.1f, file %.1f, shmem %.1f)\n", i + 1, r.rss / 1024.0,
               r.pss / 1024.0, r.pss_anon / 1024.0, r.pss_file / 1024.0, r.pss_shmem / 1024.0);
    }
    close(done[1]);
    for (int i = 0; i < n; i++) {
        int status;
        if (waitpid(kids[i], &status, 0) != kids[i] || !WIFEXITED(status) || WEXITSTATUS(status))
            rc = 1;
    }
    close(ready[0]);
    return rc;
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    static const struct option longopts[] = {CLI_ENGINE_LONGOPTS, {"n-prompt", required_argument, 0, 'p'},
                                             {"n-gen", required_argument, 0, 'n'}, {"n-depth", required_argument, 0, 'd'},
                                             {"repeats", required_argument, 0, 'r'},
                                             {"json", no_argument, 0, 'J'}, {"bandwidth", no_argument, 0, 'W'},
                                             {"pss", no_argument, 0, 'S'}, {"help", no_argument, 0, 'h'}, {0}};
    cli_engine_opts_default(&o->engine);
    o->n_prompt = 64;
    o->n_gen = 32;
    o->repeats = 5;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, CLI_ENGINE_SHORTOPTS "p:n:d:r:", longopts, NULL)) != -1) {
        int r = cli_engine_parse_opt(&o->engine, opt, optarg, "bench");
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        switch (opt) {
        case 'p': o->n_prompt = atoi(optarg); break;
        case 'n': o->n_gen = atoi(optarg); break;
        case 'd': o->n_depth = atoi(optarg); break;
        case 'r': o->repeats = atoi(optarg); break;
        case 'J': o->json = true; break;
        case 'W': o->bandwidth = true; break;
        case 'S': o->pss = true; break;
        case 'h': printf("usage: edgellm bench %s\n", USAGE); return -1;
        default: return cli_usage("bench", USAGE, "unknown option");
        }
    }
    if (!o->engine.model_path)
        return cli_usage("bench", USAGE, "-m is required");
    if (o->n_prompt < 1 || o->n_gen < 1 || o->repeats < 1 || o->repeats > 1000 || o->n_depth < 0 ||
        o->n_depth > (1 << 20))
        return cli_usage("bench", USAGE, "-p, -n and -r must be positive, -d at least 0");
    if (o->engine.n_ctx <= 0)
        o->engine.n_ctx = o->n_depth + (o->n_prompt > o->n_gen ? o->n_prompt : o->n_gen);
    if (o->engine.n_batch <= 0)
        o->engine.n_batch = o->n_prompt; /* one call, like llama-bench's default batch */
    return 0;
}

int cli_bench(int argc, char **argv)
{
    bench_opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc; /* -1: help was printed */
    if (o.pss)
        return pss_report(&o);
    err_info ei = {0};
    cli_engine e;
    double t_load = now_s();
    if ((rc = cli_engine_open(&e, &o.engine, &ei)))
        return cli_fail("bench", &ei, rc);
    t_load = now_s() - t_load;
    const model_hparams *hp = model_hparams_of(e.m);
    int32_t *toks = random_tokens(o.n_depth + (o.n_prompt > o.n_gen ? o.n_prompt : o.n_gen), hp->n_vocab);
    float *logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    double *pp = malloc((size_t)o.repeats * sizeof *pp), *tg = malloc((size_t)o.repeats * sizeof *tg),
           *ttft = malloc((size_t)o.repeats * sizeof *ttft), *bw = malloc((size_t)o.repeats * sizeof *bw),
           *reach = malloc((size_t)o.repeats * sizeof *reach); /* bw: GB/s; reach: tg over its ceiling */
    uint8_t *bw_buf = o.bandwidth ? bw_buffer() : NULL;
    /* decode reads the weights and, on average over the run, n_depth + n_gen / 2 positions */
    const double decode_gb = (decode_bytes(e.m) + kv_bytes(hp, o.engine.kv_type, o.n_depth + o.n_gen / 2.0)) / 1e9;
    if (!toks || !logits || !pp || !tg || !ttft || !bw || !reach || bw_buf == MAP_FAILED) {
        rc = err_set(&ei, -ENOMEM, "out of memory");
        goto done;
    }
    /* the depth's context, once: every run rewinds to it (a rewind keeps the cache) */
    if ((rc = model_session_eval(e.s, toks, o.n_depth, NULL, false, NULL, &ei)))
        goto done;
    const int32_t *run_toks = toks + o.n_depth;
    /* warm-up: fault the weights in and let the CPU clock settle; being the first prefill, it
     * is also what stands between opening the model and the first answer */
    double t_ready = now_s();
    if ((rc = model_session_eval(e.s, run_toks, o.n_prompt, logits, false, NULL, &ei)))
        goto done;
    t_ready = t_load + (now_s() - t_ready);
    for (int r = 0; r < o.repeats && !rc; r++) {
        model_session_rewind(e.s, o.n_depth);
        double t = now_s();
        rc = model_session_eval(e.s, run_toks, o.n_prompt, logits, false, NULL, &ei);
        pp[r] = o.n_prompt / (now_s() - t);
        ttft[r] = (now_s() - t) * 1e3; /* prefill ends with the first token's logits */
        model_session_rewind(e.s, o.n_depth);
        t = now_s();
        for (int i = 0; i < o.n_gen && !rc; i++)
            rc = model_session_eval(e.s, &run_toks[i], 1, logits, false, NULL, &ei);
        tg[r] = o.n_gen / (now_s() - t);
        if (bw_buf) {
            bw[r] = read_bandwidth_gbs(e.pool, bw_buf);
            reach[r] = tg[r] * decode_gb / bw[r];
        }
    }
    if (rc)
        goto done;
    if (bw_buf) {
        munmap(bw_buf, BW_BYTES); /* before RSS is read */
        bw_buf = NULL;
    }
    stat3 spp = summarize(pp, o.repeats), stg = summarize(tg, o.repeats), sft = summarize(ttft, o.repeats);
    stat3 sbw = {0}, sreach = {0};
    if (o.bandwidth) {
        sbw = summarize(bw, o.repeats);
        sreach = summarize(reach, o.repeats);
    }
    long long rss = rss_bytes();
    const double huge = huge_page_share(&e);
    const bool strips = e.ms && mstore_prepared(e.ms); /* matrices laid out for decode (kern.h) */
    char huge_json[16] = "null";
    if (huge >= 0)
        snprintf(huge_json, sizeof huge_json, "%.3f", huge);
    const char *kern_name = getenv("EDGELLM_KERNEL");
    if (!kern_name) {
        const kern_ops *k;
        kern_select(NULL, &k, NULL);
        kern_name = k->name;
    }
    if (o.json) {
        printf("{\"model\":\"%s\",\"type\":\"%s\",\"weights_mib\":%.1f,\"threads\":%d,\"kernel\":\"%s\","
               "\"n_prompt\":%d,\"n_gen\":%d,\"n_depth\":%d,\"repeats\":%d,"
               "\"pp_tps\":{\"median\":%.2f,\"min\":%.2f,\"max\":%.2f},"
               "\"tg_tps\":{\"median\":%.2f,\"min\":%.2f,\"max\":%.2f},"
               "\"ttft_ms\":{\"median\":%.2f,\"min\":%.2f,\"max\":%.2f},"
               "\"load_s\":%.4f,\"ready_s\":%.4f,\"weights_from\":\"%s\",\"weights_in_2mib_pages\":%s,"
               "\"weights_in_strips\":%s,\"rss_mib\":%.1f",
               o.engine.model_path, qt_name(model_main_type(e.m)), model_weight_bytes(e.m) / 1048576.0,
               pool_size(e.pool), kern_name, o.n_prompt, o.n_gen, o.n_depth, o.repeats, spp.median, spp.min, spp.max,
               stg.median, stg.min, stg.max, sft.median, sft.min, sft.max, t_load, t_ready, weights_source(&e),
               huge_json, strips ? "true" : "false", rss / 1048576.0);
        if (o.bandwidth)
            printf(",\"decode_mb\":%.1f,\"read_gbs\":{\"median\":%.2f,\"min\":%.2f,\"max\":%.2f},"
                   "\"tg_ceiling_tps\":%.2f,\"tg_of_ceiling\":{\"median\":%.3f,\"min\":%.3f,\"max\":%.3f}",
                   decode_gb * 1e3, sbw.median, sbw.min, sbw.max, sbw.median / decode_gb, sreach.median, sreach.min,
                   sreach.max);
        printf("}\n");
    } else {
        printf("model %s: %s, %.1f MiB of weights, %d threads, kernel %s\n", o.engine.model_path,
               qt_name(model_main_type(e.m)), model_weight_bytes(e.m) / 1048576.0, pool_size(e.pool), kern_name);
        char at[24] = "", pp_name[48], tg_name[48]; /* llama-bench's names: pp64, tg32 @ d2000 */
        if (o.n_depth)
            snprintf(at, sizeof at, " @ d%d", o.n_depth);
        snprintf(pp_name, sizeof pp_name, "pp%d%s", o.n_prompt, at);
        snprintf(tg_name, sizeof tg_name, "tg%d%s", o.n_gen, at);
        printf("%-6s %8.2f t/s (min %.2f, max %.2f)\n", pp_name, spp.median, spp.min, spp.max);
        printf("%-6s %8.2f t/s (min %.2f, max %.2f)\n", tg_name, stg.median, stg.min, stg.max);
        printf("time to first token (%d-token prompt): %.1f ms (min %.1f, max %.1f)\n", o.n_prompt, sft.median,
               sft.min, sft.max);
        char pages[80] = "";
        if (huge >= 0)
            snprintf(pages, sizeof pages, "; %.0f%% of the weights in 2 MiB pages%s", 100 * huge,
                     strips ? ", matrices in strips" : "");
        printf("load %.3f s, ready %.3f s (load + first %d-token prefill), weights from %s, RSS %.1f MiB%s\n",
               t_load, t_ready, o.n_prompt, weights_source(&e), rss / 1048576.0, pages);
        if (o.bandwidth)
            printf("read bandwidth %.1f GB/s (min %.1f, max %.1f; probed after each decode run), %.1f MB read a "
                   "token -> decode ceiling %.1f t/s, %.0f%% reached (each run against its own probe; min %.0f%%, "
                   "max %.0f%%)\n",
                   sbw.median, sbw.min, sbw.max, decode_gb * 1e3, sbw.median / decode_gb, 100 * sreach.median,
                   100 * sreach.min, 100 * sreach.max);
    }
done:
    if (bw_buf && bw_buf != MAP_FAILED)
        munmap(bw_buf, BW_BYTES);
    free(toks);
    free(logits);
    free(pp);
    free(tg);
    free(ttft);
    free(bw);
    free(reach);
    cli_engine_close(&e);
    return rc ? cli_fail("bench", &ei, rc) : 0;
}
