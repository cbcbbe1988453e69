/* edgellm mkmodel — the command line of the synthetic-model writer (tools/mkmodel.h):
 * parses options, runs mkmodel_write, reports what it wrote. Other tools and the Makefile
 * call it with exactly these options; keep them stable. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "daemon/cli.h"
#include "tools/mkmodel.h"

#define USAGE "--shape demo|tinyllama-1.1b|qwen2.5-0.5b|smollm2-135m --type F16|Q4_0|Q8_0|Q4_K_M -o FILE [--seed N] [--vocab FILE]"

int cli_mkmodel(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"shape", required_argument, NULL, 's'}, {"type", required_argument, NULL, 't'},
        {"output", required_argument, NULL, 'o'}, {"seed", required_argument, NULL, 'S'},
        {"vocab", required_argument, NULL, 'v'},  {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    mkmodel_opts o = {.seed = 1, .n_threads = 0};
    const char *shape = NULL, *type = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 's': shape = optarg; break;
        case 't': type = optarg; break;
        case 'o': o.path = optarg; break;
        case 'v': o.vocab_path = optarg; break;
        case 'S': {
            char *end;
            errno = 0;
            o.seed = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end || optarg[0] == '-')
                return cli_usage("mkmodel", USAGE, "--seed '%s' is not a non-negative integer", optarg);
            break;
        }
        case 'h': printf("usage: edgellm mkmodel %s\n", USAGE); return 0;
        default: return cli_usage("mkmodel", USAGE, "unknown option");
        }
    }
    if (optind < argc)
        return cli_usage("mkmodel", USAGE, "unexpected argument '%s'", argv[optind]);
    if (!shape || !type || !o.path)
        return cli_usage("mkmodel", USAGE, "--shape, --type and -o are required");
    if (!(o.shape = mkmodel_shape_find(shape)))
        return cli_usage("mkmodel", USAGE, "unknown shape '%s'", shape);
    int ft = mkmodel_ftype_from_name(type);
    if (ft < 0)
        return cli_usage("mkmodel", USAGE, "unknown type '%s'", type);
    o.ftype = (mkmodel_ftype)ft;

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    err_info ei = {0};
    int rc = mkmodel_write(&o, &ei);
    if (rc)
        return cli_fail("mkmodel", &ei, rc);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    struct stat st;
    long long size = stat(o.path, &st) == 0 ? (long long)st.st_size : -1;
    printf("wrote %s: %s %s, seed %llu, %.1f MiB in %.1f s\n", o.path, o.shape->name, mkmodel_ftype_name(o.ftype),
           (unsigned long long)o.seed, size / 1048576.0, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
