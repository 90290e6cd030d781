#!/usr/bin/env bash
# Runs every test of tb-attention on a fresh machine: installs what the tests need (a virtualenv
# with the package and its test extras, Debian's chromium and CJK fonts), then the JavaScript unit
# tests (node --test) and the Python suite (pytest: summary format, plugin backend, real
# tensorboard processes, headless Chromium, Keras callback, demos).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# Keras 3 on the JAX and PyTorch backends writes through the TensorFlow-free writer; the tests
# exercise both. torch 2.13.0 is pinned because that is the CPU build this machine kind has on
# disk (a bare "torch" would pull a multi-GB CUDA build).
.venv/bin/python -m pip install -q jax jaxlib "${TEST_TORCH:-torch==2.13.0}"

# Debian's Chromium for the browser tests (playwright drives it; no browser is downloaded).
need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
fc-list 2>/dev/null | grep -qi "noto.*cjk" || need_apt+=(fonts-noto-cjk)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q </dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}" </dev/null
fi

export TF_CPP_MIN_LOG_LEVEL=3
export PYTHONDONTWRITEBYTECODE=1

echo "== JavaScript unit tests (node --test)"
node --test tests/js/

echo "== Python tests (pytest, two worker processes; PYTEST_WORKERS=0 runs them in this one)"
# --dist loadfile: each test file runs in one worker, so a module fixture (a tensorboard process,
# a trained model) starts once; files are handed out in the order tests/conftest.py sets
# (--no-loadscope-reorder), the longest first. The demos are trained once for both workers
# (conftest.demo_logs).
.venv/bin/python -m pytest -q -p no:cacheprovider -n "${PYTEST_WORKERS:-2}" --dist loadfile \
  --no-loadscope-reorder tests "$@"
