#!/usr/bin/env bash
# Run the CUDA backend's kernels on the CPU (cuda_emu.h: one fiber per GPU
# thread, real barrier and shuffle semantics) against the CPU backend, then
# the backend itself (cuda.cu over runtime/cuBLAS mocks) under the real GPU
# test, tests/unit/test_cuda_ops.c. For machines without a GPU: checks
# indexing, splits, barriers and the glue, not speed, stream ordering or GPU
# rounding. Needs build/libcleave.a (make).
#   BUILD=build bash tests/gpu/emu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
BUILD=${BUILD:-build}
OUT=$BUILD/emu
mkdir -p "$OUT"
# k<<<grid, block, shm, stream>>>(args) -> emu_launch(emu_cfg(grid, block, shm, stream), k, args)
python3 - "${SRC:-src/backend/cuda/kernels.cu}" "$OUT/kernels_emu.cpp" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
pat = re.compile(r'([A-Za-z_]\w*(?:<[^<>;]*>)?)\s*<<<(.*?)>>>\s*\(', re.S)
out, n = pat.subn(lambda m: 'emu_launch(emu_cfg(%s), %s, ' % (m.group(2), m.group(1)), src)
if n == 0:
    sys.exit('no kernel launches found in ' + sys.argv[1])
open(sys.argv[2], 'w').write('#line 1 "src/backend/cuda/kernels.cu"\n' + out)
PY
CXX=${CXX:-g++}
FLAGS="-std=c++17 -O1 -g -ffp-contract=off -Wall -Wno-unknown-pragmas -Iinclude -Isrc -Isrc/backend/cuda -Itests/gpu/emu/include"
$CXX $FLAGS -c "$OUT/kernels_emu.cpp" -o "$OUT/kernels_emu.o"
$CXX $FLAGS -c tests/gpu/emu/emu_kernels.cpp -o "$OUT/emu_kernels.o"
$CXX "$OUT/emu_kernels.o" "$OUT/kernels_emu.o" "$BUILD/libcleave.a" -o "$OUT/emu_kernels" -lcjson -lpcre2-8 -lutf8proc -lm -lpthread
"$OUT/emu_kernels"

# The backend itself (src/backend/cuda/cuda.cu) over the runtime/cuBLAS mocks
# in cuda_rt_emu.h, driven by the real GPU test.
$CXX $FLAGS -x c++ -c src/backend/cuda/cuda.cu -o "$OUT/cuda_emu.o"
${CC:-cc} -std=c11 -O1 -g -Wall -Wextra -D_GNU_SOURCE -Iinclude -Isrc -c tests/unit/test_cuda_ops.c -o "$OUT/test_cuda_ops.o"
$CXX "$OUT/test_cuda_ops.o" "$OUT/cuda_emu.o" "$OUT/kernels_emu.o" "$BUILD/libcleave.a" -o "$OUT/test_cuda_ops" \
    -lcjson -lpcre2-8 -lutf8proc -lm -lpthread
CLV_CUDA_TEST_SMALL=1 "$OUT/test_cuda_ops"
