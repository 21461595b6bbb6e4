#!/usr/bin/env bash
# Build the separate Python 3.11 environment the upstream jina-clip-v2 remote code runs in (transformers 4, CPU
# torch), for tests/upstream/generate_jina_reference.py. The project's own environment is not touched.
#
# Usage: tests/upstream/make_venv.sh VENV_DIR
#
# Every pip call pins torch, so no dependency can swap the CPU build for a CUDA one. flash-attn and xformers are
# left out on purpose: upstream falls back to plain torch attention without them (use_flash_attn / x_attention
# are switched off when they are missing or there is no CUDA).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 VENV_DIR" >&2
  exit 2
fi
venv=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3.11}
torch_pin="torch==2.13.0"

"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "$python is not Python 3.11 (set PYTHON=...)" >&2; exit 2; }
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-input)
"${pip[@]}" "$torch_pin"
"${pip[@]}" "$torch_pin" -r "$here/requirements.txt"

# Refuse an environment whose torch is not the pinned CPU build, or that cannot import the upstream code's
# dependencies (the generator's own check, with the same torchvision workaround it runs under).
"$venv/bin/python" "$here/generate_jina_reference.py" --check-environment
