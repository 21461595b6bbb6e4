#!/usr/bin/env bash
# Regenerate tests/fixtures/jina_upstream from the upstream jina-clip-v2 code, end to end (see README.md).
#
# Usage: tests/upstream/regenerate.sh UPSTREAM_DIR VENV_DIR
#   UPSTREAM_DIR  the upstream files, laid out as README.md describes (checked against pinned SHA-256 sums)
#   VENV_DIR      the separate transformers-4 environment; built with make_venv.sh when it does not exist yet
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 UPSTREAM_DIR VENV_DIR" >&2
  exit 2
fi
upstream=$1
venv=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

if [[ ! -x "$venv/bin/python" ]]; then
  "$here/make_venv.sh" "$venv"
fi
"$venv/bin/python" "$here/generate_jina_reference.py" "$upstream" "$root/tests/fixtures/jina_upstream"
