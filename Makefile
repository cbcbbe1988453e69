# edgellm — build, test and install. `make help` lists the targets.
#
# Layout: every top-level module directory (engine config api daemon tools) becomes one static
# library; files named *_main.c are programs. Tests are tests/test_*.c (one Check suite each)
# plus tests/*.sh integration scripts. Objects go to $(BUILD)/obj, so `make asan` can build a
# second tree in build-asan without touching the first.

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
PREFIX  ?= /usr/local
DESTDIR ?=
SHARED  ?= ../shared
MODEL   ?= $(BUILD)/demo.gguf
PORT    ?= 8080

ARCH := $(shell $(CC) -dumpmachine | sed 's/-.*//')

PKGS := libmicrohttpd libcjson libuv sqlite3 libpcre2-8 libcurl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes
# gcc's truncation warning flags snprintf into fixed buffers that are sized on purpose; clang
# has no such warning (and warns about the option)
WARN     += $(if $(findstring clang,$(shell $(CC) --version 2>/dev/null)),,-Wno-format-truncation)
CPPFLAGS += -I. -D_GNU_SOURCE
CFLAGS   += -std=c11 $(OPT) -g $(WARN) $(SAN) $(PKG_CFLAGS)
LDFLAGS  += $(SAN)
LDLIBS   += $(PKG_LIBS) -lpthread -lm

OBJ := $(BUILD)/obj
MODULES := engine config api daemon tools

# SIMD kernels: one file per instruction set, compiled with that set enabled; chosen at run time.
ifeq ($(ARCH),x86_64)
KERN_SKIP := engine/kern_neon.c
else ifeq ($(ARCH),aarch64)
KERN_SKIP := engine/kern_avx2.c engine/kern_avx512.c
else
KERN_SKIP := engine/kern_avx2.c engine/kern_avx512.c engine/kern_neon.c
endif
$(OBJ)/engine/kern_avx2.o:   CFLAGS += -mavx2 -mfma -mf16c
$(OBJ)/engine/kern_avx512.o: CFLAGS += -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c
$(OBJ)/engine/kern_neon.o:   CFLAGS += -march=armv8.2-a+dotprod+fp16

module_srcs = $(filter-out %_main.c $(KERN_SKIP),$(wildcard $(1)/*.c))
module_lib  = $(BUILD)/lib$(1).a
LIBS := $(foreach m,daemon api tools config engine,$(call module_lib,$(m)))

PROGS := $(BUILD)/edgellm $(if $(wildcard daemon/edgellmd_main.c),$(BUILD)/edgellmd)
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))

.PHONY: all deps run test check-unit check-integration test-aarch64 fuzz asan valgrind soak bench bench-llama bench-http clean install uninstall help
all: $(PROGS)

help:
	@echo "make            build $(BUILD)/edgellm (CLI) and $(BUILD)/edgellmd (daemon)"
	@echo "make run        install missing packages, build, run on the demo model (MODEL=file.gguf for another)"
	@echo "make test       install missing packages, build, run every suite"
	@echo "make asan       the tests again under AddressSanitizer + UBSan (in build-asan/)"
	@echo "make valgrind   the abuse, daemon, cache, models and fault scripts with edgellmd under valgrind (memcheck)"
	@echo "make soak       load and abuse round after round for SOAK_SECONDS (default 600); RSS must not grow"
	@echo "make test-aarch64  cross-build the engine suites for aarch64 and run them under qemu"
	@echo "make fuzz       libFuzzer+ASan+UBSan on the parsers, FUZZ_SECONDS (default 60) each"
	@echo "make bench      prefill/decode t/s, time to first token, RSS of TinyLlama-shaped files + bandwidth probe"
	@echo "make bench-llama  those files and llama.cpp-quantized ones through edgellm and llama.cpp, side by side"
	@echo "make bench-http the same generation through edgellm run and through the daemon's HTTP API"
	@echo "make install    binaries, systemd units, default config (PREFIX=$(PREFIX) DESTDIR=$(DESTDIR))"
	@echo "make uninstall  removes what install put there (not config or state)"

$(OBJ)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

define module_rule
$(call module_lib,$(1)): $(patsubst %.c,$(OBJ)/%.o,$(call module_srcs,$(1)))
	@mkdir -p $$(dir $$@)
	rm -f $$@ && $(AR) rcs $$@ $$^
endef
$(foreach m,$(MODULES),$(eval $(call module_rule,$(m))))

$(BUILD)/edgellm: $(OBJ)/daemon/edgellm_main.o $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/edgellmd: $(OBJ)/daemon/edgellmd_main.o $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(OBJ)/tests/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(CHECK_LIBS)

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)

# ---- set-up ---------------------------------------------------------------
# Missing Debian/Ubuntu packages are installed by tools/deps.sh (sudo when not root).
deps:
	@tools/deps.sh
	@pkg-config --exists $(PKGS) check || { echo "pkg-config cannot find: $(PKGS) check" >&2; exit 1; }

$(BUILD)/demo.gguf: $(BUILD)/edgellm
	$(BUILD)/edgellm mkmodel --shape demo --type Q8_0 -o $@

# `make run`: the daemon on the demo model (or MODEL=file.gguf), on 127.0.0.1:$(PORT) and a
# Unix socket next to the binaries.
run: deps
	@$(MAKE) --no-print-directory all $(MODEL)
	@echo "try: curl -s http://127.0.0.1:$(PORT)/v1/chat/completions -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":32}'"
	@echo " or: curl -s --unix-socket $(BUILD)/edgellmd.sock http://localhost/v1/models"
	@echo " or: $(BUILD)/edgellm chat --socket $(BUILD)/edgellmd.sock"
	$(BUILD)/edgellmd --model $(MODEL) --port $(PORT) --socket $(BUILD)/edgellmd.sock

# ---- tests ----------------------------------------------------------------
test: deps
	@$(MAKE) --no-print-directory check-unit check-integration

check-unit: $(PROGS) $(TEST_BINS)
	@fail=0; for t in $(TEST_BINS); do \
	  echo "== $$t"; SHARED=$(SHARED) EDGELLM_BUILD=$(BUILD) $$t || fail=1; \
	done; exit $$fail

check-integration: $(PROGS)
	@fail=0; for s in $(wildcard tests/integ_*.sh); do \
	  echo "== $$s"; SHARED=$(SHARED) EDGELLM_BUILD=$(BUILD) bash $$s || fail=1; \
	done; exit $$fail

# aarch64 (Raspberry Pi 5, Jetson): cross-build the engine and its suites and run them under
# qemu, on a CPU with dotprod (the NEON kernels; conformance against llama.cpp's logits) and
# on one without (a Pi 4: dispatch must fall back to ref). Only engine/ is built, since the
# daemon's libraries are not installed for arm64. qemu-user on this platform hangs in
# pthread_create and fork, so Check runs in-process (CK_FORK=no), the pool has one thread
# and the tokenizer's thread/timing cases are left out (they run natively in `make test`).
AARCH64_CC ?= aarch64-linux-gnu-gcc
QEMU       := qemu-aarch64-static -L /usr/aarch64-linux-gnu
AARCH64_BIN = $(BUILD)-aarch64/tests
test-aarch64:
	@tools/deps.sh --aarch64
	PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig \
	$(MAKE) --no-print-directory CC=$(AARCH64_CC) BUILD=$(BUILD)-aarch64 PKGS="libpcre2-8 libcjson" \
	  LIBS=$(BUILD)-aarch64/libengine.a $(AARCH64_BIN)/test_kern $(AARCH64_BIN)/test_tok $(AARCH64_BIN)/test_model
	export CK_FORK=no SHARED=$(SHARED); \
	$(QEMU) -cpu max $(AARCH64_BIN)/test_kern && \
	$(QEMU) -cpu cortex-a72 $(AARCH64_BIN)/test_kern && \
	CK_EXCLUDE_TAGS="threads speed" $(QEMU) -cpu max $(AARCH64_BIN)/test_tok && \
	CK_RUN_CASE=conformance TEST_KERNELS=neon TEST_THREADS=1 $(QEMU) -cpu max $(AARCH64_BIN)/test_model

# `make bench`: TinyLlama-1.1B-shaped files (random weights, written by mkmodel once) in three
# types, each benchmarked with the read-bandwidth probe that bounds decode, its weights read
# from the shared copy as the daemon reads them (the first run makes the copy, and its load
# time is the copy's). BENCH_ARGS adds options (e.g. BENCH_ARGS="-r 10"); BENCH_TYPES picks
# the files.
BENCH_DIR   ?= $(BUILD)/bench
BENCH_TYPES ?= Q4_0 Q4_K_M Q8_0
BENCH_ARGS  ?=
BENCH_FILES := $(BENCH_TYPES:%=$(BENCH_DIR)/tinyllama-1.1b.%.gguf)
$(BENCH_DIR)/tinyllama-1.1b.%.gguf: | $(BUILD)/edgellm
	@mkdir -p $(dir $@)
	$(BUILD)/edgellm mkmodel --shape tinyllama-1.1b --type $* -o $@
bench: all $(BENCH_FILES)
	@for f in $(BENCH_FILES); do \
	  $(BUILD)/edgellm bench -m $$f --shm -p 64 -n 32 --bandwidth $(BENCH_ARGS) || exit 1; echo; \
	done

# `make bench-llama`: make bench's files, and the same shapes quantized by llama.cpp, through
# edgellm and through llama.cpp, round by round (see tools/vs_llama_cpp.py). llama.cpp is the
# prebuilt CPU build that node-llama-cpp ships, pinned, installed from npm into $(LLAMA_CPP_DIR)
# without its install scripts (the prebuilt libraries need none), and called from Python
# (tools/llama_cpp.py). BENCH_LLAMA_ARGS adds options (e.g. "-r 9", or "--no-shm" to have
# edgellm read the files' rows instead of its shared copy).
LLAMA_CPP_NPM    ?= node-llama-cpp@3.14.2
LLAMA_CPP_DIR    ?= $(BUILD)/llama-cpp
BENCH_LLAMA_ARGS ?=
LLAMA_CPP   := $(LLAMA_CPP_DIR)/node_modules/node-llama-cpp/package.json
$(LLAMA_CPP):
	npm install --prefix $(LLAMA_CPP_DIR) --ignore-scripts --no-audit --no-fund $(LLAMA_CPP_NPM)
# The same shapes quantized by llama.cpp's own quantizer from an F16 file (removed afterwards):
# edgellm reads other tools' files, at the same speed.
BENCH_F16 := $(BENCH_DIR)/tinyllama-1.1b.F16.gguf
.INTERMEDIATE: $(BENCH_F16)
LLAMA_QUANTIZED := $(BENCH_TYPES:%=$(BENCH_DIR)/tinyllama-1.1b.llama-cpp.%.gguf)
$(BENCH_DIR)/tinyllama-1.1b.llama-cpp.%.gguf: $(BENCH_F16) | $(LLAMA_CPP)
	tools/llama_cpp.py --lib $(LLAMA_CPP_DIR) quantize $< $@ $*
bench-llama: all $(BENCH_FILES) $(LLAMA_QUANTIZED) $(LLAMA_CPP)
	EDGELLM_BUILD=$(BUILD) tools/vs_llama_cpp.py --lib $(LLAMA_CPP_DIR) $(BENCH_LLAMA_ARGS) $(BENCH_FILES) $(LLAMA_QUANTIZED)

# `make bench-http`: the same greedy generation through `edgellm run` and through edgellmd's
# HTTP API (TCP and Unix socket), side by side: what the daemon path costs. The file has the
# TinyLlama shape and Llama's real SentencePiece vocabulary (from $(SHARED)), so that every
# generated token is text the client sees arrive. BENCH_HTTP_ARGS adds options ("-r 10 -n 128").
BENCH_HTTP_MODEL := $(BENCH_DIR)/tinyllama-1.1b.Q4_0.llama-vocab.gguf
$(BENCH_HTTP_MODEL): | $(BUILD)/edgellm
	@mkdir -p $(dir $@)
	$(BUILD)/edgellm mkmodel --shape tinyllama-1.1b --type Q4_0 --vocab $(SHARED)/tokenizer/ggml-vocab-llama-spm.gguf -o $@
bench-http: all $(BENCH_HTTP_MODEL)
	EDGELLM_BUILD=$(BUILD) tools/http_overhead.py -m $(BENCH_HTTP_MODEL) $(BENCH_HTTP_ARGS)

# `make fuzz`: every libFuzzer harness (clang, ASan+UBSan) for FUZZ_SECONDS each, in its own
# build tree (clang objects must not mix with the gcc ones).
FUZZ_SECONDS ?= 60
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) BUILD=build-fuzz SHARED=$(SHARED) bash tests/fuzz/run.sh

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  check-unit check-integration

# `make valgrind`: integration scripts with the daemon under memcheck (EDGELLMD_WRAPPER, see
# tests/daemon_lib.sh): a memory error or a definite leak at exit fails the script. The subset
# covers every request path (abuse: hostile HTTP and JSON, slowloris; daemon: the routes,
# streaming, cancellation), the response cache (cache: hits, replay, corrupt and full disks),
# several models (models: load, switch, unload, budget) and the SIGBUS guard (faults, without the
# kill -9 rounds: those test SQLite, not our memory), in about 10 minutes on 2 cores. Left out:
# scripts whose point is timing or load (queue, load, offload's queue-full and deadline
# triggers), which valgrind's 50-fold slowdown turns into different scenarios; those daemon
# paths run under ASan in `make asan`. Speed checks say SKIP under a wrapper (check_timing).
# (allregs-at-mem-access: a read that faulted is restarted after the SIGBUS guard mapped
# zeros under it, which needs every register exact at memory accesses, not only SP and PC)
# (fair-sched: valgrind runs one thread at a time, and its default lock let the worker's
# compute threads hand it among themselves for minutes while the event loop waited: requests
# timed out and a client's leaving went unnoticed until the generation ended)
VALGRIND ?= valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
            --vex-iropt-register-updates=allregs-at-mem-access --fair-sched=yes
VALGRIND_SCRIPTS ?= tests/integ_abuse.sh tests/integ_daemon.sh tests/integ_cache.sh tests/integ_models.sh tests/integ_faults.sh
valgrind: deps
	@$(MAKE) --no-print-directory all
	@fail=0; for s in $(VALGRIND_SCRIPTS); do \
	  echo "== $$s (edgellmd under valgrind)"; \
	  EDGELLMD_WRAPPER="$(VALGRIND)" START_TIMEOUT_S=300 FAULTS_KILLS=0 \
	  SHARED=$(SHARED) EDGELLM_BUILD=$(BUILD) bash $$s || fail=1; \
	done; exit $$fail

# `make soak`: tests/soak.sh, the load and abuse mix round after round for SOAK_SECONDS.
SOAK_SECONDS ?= 600
soak: all
	SOAK_SECONDS=$(SOAK_SECONDS) SHARED=$(SHARED) EDGELLM_BUILD=$(BUILD) bash tests/soak.sh

# ---- install --------------------------------------------------------------
# Binaries, systemd units (unit paths rewritten for PREFIX), sysusers/tmpfiles entries and the
# default config, which is never overwritten. uninstall leaves config, state and the user.
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
SYSCONFDIR  ?= /etc
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
	  $(DESTDIR)$(SYSCONFDIR)/edgellm
	install -m 0755 $(BUILD)/edgellm $(BUILD)/edgellmd $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' -e 's|/etc/edgellm/|$(SYSCONFDIR)/edgellm/|g' \
	  systemd/edgellmd.service >$(DESTDIR)$(UNITDIR)/edgellmd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/edgellmd.service
	install -m 0644 systemd/edgellmd.socket $(DESTDIR)$(UNITDIR)/edgellmd.socket
	install -m 0644 systemd/edgellm.sysusers $(DESTDIR)$(SYSUSERSDIR)/edgellm.conf
	install -m 0644 systemd/edgellm.tmpfiles $(DESTDIR)$(TMPFILESDIR)/edgellm.conf
	test -e $(DESTDIR)$(SYSCONFDIR)/edgellm/edgellmd.json || \
	  install -m 0644 systemd/edgellmd.json $(DESTDIR)$(SYSCONFDIR)/edgellm/edgellmd.json

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/edgellm $(DESTDIR)$(PREFIX)/bin/edgellmd \
	  $(DESTDIR)$(UNITDIR)/edgellmd.service $(DESTDIR)$(UNITDIR)/edgellmd.socket \
	  $(DESTDIR)$(SYSUSERSDIR)/edgellm.conf $(DESTDIR)$(TMPFILESDIR)/edgellm.conf

clean:
	rm -rf $(BUILD) build-asan build-fuzz $(BUILD)-aarch64
