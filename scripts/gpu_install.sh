#!/bin/sh
# On the GPU host: join the parts scripts/gpu_wheels.sh made, check them, and install the wheels
# into a venv over this host's python3 (which has torch 2.11.0 and vLLM's heavier dependencies).
#
#     scripts/gpu_install.sh PARTS_DIR [VENV]      # default VENV: ./gpu-venv ($PYTHON: python3)
#
# The venv is made with --system-site-packages (the host's torch stays visible; where python3 is
# itself a venv, its site-packages by a .pth file) and
# --without-pip; pip runs from its own wheel (python pip-*.whl/pip), so the host's python3 needs
# neither pip nor ensurepip.  Every wheel is installed with --no-deps --no-index: nothing is
# downloaded, and nothing is written outside VENV (the host's python3 is left as it was).
# Then, from the repository (builder runs from this checkout):
#
#     BUILDER_GPU_PYTHON=$PWD/VENV/bin/python VENV/bin/python -m pytest -m gpu tests/test_serve_gpu.py -s
#
# (the test adopts VENV with `builder runtime adopt`, serves a tiny model made on the spot from
# it, and prints its figures).
set -eu

PARTS=${1:?usage: scripts/gpu_install.sh PARTS_DIR [VENV]}
VENV=${2:-gpu-venv}
PY=${PYTHON:-python3}

(cd "$PARTS" && sha256sum --check --quiet SHA256SUMS)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT INT TERM
cat "$PARTS"/gpu-wheels.tar.part-* | tar -C "$WORK" -xf -

"$PY" -m venv --system-site-packages --without-pip "$VENV"
# --system-site-packages shows the base interpreter's packages.  Where python3 is itself a venv
# (the lent GPU host's: /opt/torch/.venv, which holds torch), its own site-packages come in by a
# .pth file, after VENV's own (so the wheels installed below win).
"$PY" - "$VENV" <<'EOF'
import pathlib, sys, sysconfig
if sys.prefix != sys.base_prefix:
    own = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    site = next(pathlib.Path(sys.argv[1]).glob("lib/python*/site-packages"))
    (site / "zz-host-python.pth").write_text("".join(f"{p}\n" for p in own))
EOF
set --
PIP=
for whl in "$WORK"/wheels/*.whl; do
    case "${whl##*/}" in
        pip-[0-9]*) PIP=$whl ;;
        *) set -- "$@" "$whl" ;;
    esac
done
[ -n "$PIP" ] || { echo "no pip wheel among the parts" >&2; exit 1; }
"$VENV/bin/python" "$PIP/pip" install --no-deps --no-index --no-cache-dir --disable-pip-version-check --quiet "$@"
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPUs", torch.cuda.device_count())
print("vllm", md.version("vllm"), "| pydantic", md.version("pydantic"), "| fastapi", md.version("fastapi"))
EOF
echo "installed $# wheels into $VENV" >&2
echo "next: BUILDER_GPU_PYTHON=$(cd "$VENV" && pwd)/bin/python $VENV/bin/python -m pytest -m gpu tests/test_serve_gpu.py -s" >&2
