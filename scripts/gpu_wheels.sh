#!/bin/sh
# Download, on a machine with PyPI, the wheels a vLLM 0.26.0 server needs on a GPU host
# that already has torch 2.11.0 (+cu130) and vLLM's heavier dependencies (transformers,
# tokenizers, numpy ...), plus what the GPU test needs to run builder from this checkout
# (pytest, click, packaging, tomlkit, tomli); pack them into parts under 45 MB for
# transport.  On the GPU host, scripts/gpu_install.sh joins the parts and installs them
# into a venv over the host's python3 (--system-site-packages).
#
#     scripts/gpu_wheels.sh [OUT]            # default OUT: gpu-wheels/ (ignored by git)
#
# Versions: one resolution of vllm==0.26.0 and torch==2.11.0 (and builder's test needs) for
# CPython 3.12 on x86_64 manylinux_2_28 with uv (this checkout's .venv/bin/uv, or $UV), so
# the wheels fit vLLM 0.26.0's own requirements and each other; only the packages listed
# below are downloaded, each with --no-deps (the host has the rest).  Writes
#   OUT/resolved.txt     uv's resolution (every package, pinned)
#   OUT/wheels/*.whl     the wheels (CPython 3.12, manylinux x86_64 or pure Python)
#   OUT/parts/gpu-wheels.tar.part-aa ...   the wheels and gpu_install.sh in one tar, split
#   OUT/parts/SHA256SUMS                   the parts' sha256 (checked before joining)
# Nothing here is committed: the wheels are hundreds of MB.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-"$ROOT/gpu-wheels"}
UV=${UV:-"$ROOT/.venv/bin/uv"}
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
PART_SIZE=45M

# What vLLM 0.26.0's server needs that a host with torch 2.11.0 lacks (measured on the lent
# GPU host); VLLM_USE_FLASHINFER_SAMPLER=0 in the server's environment (envs/service.toml
# [env]) keeps vLLM off FlashInfer's sampler, whose wheel is not among them.
SERVE="vllm uvloop fastapi starlette cbor2 pyzmq openai-harmony openai httpx2 sniffio msgspec pybase64
cachetools py-cpuinfo prometheus-client llguidance xgrammar apache-tvm-ffi uvicorn watchfiles
partial-json-parser model-hosting-container-standards jmespath einops pydantic pydantic-core
annotated-types typing-inspection prometheus-fastapi-instrumentator python-multipart"
# builder and its test on the host (pyproject.toml's dependencies, pytest's own), and pip
# (gpu_install.sh runs pip from its wheel: the host's python3 need not have pip).
TEST="pytest pluggy iniconfig click packaging tomlkit tomli pip"

mkdir -p "$OUT/wheels" "$OUT/parts"
cat > "$OUT/requirements.in" <<'EOF'
vllm==0.26.0
torch==2.11.0
pytest
click>=8.1
packaging>=26.4
tomlkit>=0.12
tomli>=2.2.1,<2.4
pip
EOF
echo "resolving vllm 0.26.0 + torch 2.11.0 for CPython 3.12 on x86_64 manylinux_2_28 ..." >&2
"$UV" pip compile "$OUT/requirements.in" --python-version 3.12 --python-platform x86_64-manylinux_2_28 \
    --no-config --no-header --no-annotate --quiet -o "$OUT/resolved.txt"

version_of() {  # the resolved version of package $1 (PEP 503 name)
    "$PY" - "$OUT/resolved.txt" "$1" <<'EOF'
import re, sys
want = re.sub(r"[-_.]+", "-", sys.argv[2]).lower()
for line in open(sys.argv[1], encoding="utf-8"):
    name, sep, version = line.strip().partition("==")
    if sep and re.sub(r"[-_.]+", "-", name).lower() == want:
        print(version.split(";")[0].strip())
        break
else:
    sys.exit(f"{sys.argv[2]} is not in the resolution")
EOF
}

for name in $SERVE $TEST; do
    version=$(version_of "$name")
    echo "downloading $name==$version" >&2
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$OUT/wheels" \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 "$name==$version"
done

cp "$ROOT/scripts/gpu_install.sh" "$OUT/gpu_install.sh"
rm -f "$OUT"/parts/gpu-wheels.tar.part-* "$OUT/parts/SHA256SUMS"
tar -C "$OUT" -cf - wheels gpu_install.sh resolved.txt | split -b "$PART_SIZE" - "$OUT/parts/gpu-wheels.tar.part-"
(cd "$OUT/parts" && sha256sum gpu-wheels.tar.part-* > SHA256SUMS)
count=$(find "$OUT/wheels" -name '*.whl' | wc -l)
size=$(du -sh "$OUT/wheels" | cut -f1)
parts=$(find "$OUT/parts" -name 'gpu-wheels.tar.part-*' | wc -l)
echo "$count wheels ($size) in $OUT/wheels; $parts parts of at most $PART_SIZE in $OUT/parts" >&2
echo "on the GPU host, with the parts in DIR: scripts/gpu_install.sh DIR [VENV]" >&2
