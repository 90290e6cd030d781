#!/usr/bin/env bash
# The main job on a fresh machine: installs tb-attention into a virtualenv, trains every demo
# (English->Chinese translation at two learning rates, a Vision Transformer, the seed article's
# hand-written attention, a causal language model growing an induction head, a keras-hub
# Llama-style causal LM LoRA-fine-tuned on text) into ./logs, then
# starts TensorBoard with the Attention tab on http://127.0.0.1:6006/.
#
#   bash scripts/demo.sh            # everything, then serve
#   TB_ATTENTION_NO_SERVER=1 bash scripts/demo.sh   # train only (for scripts)
#   LOGDIR=/tmp/logs bash scripts/demo.sh --small   # extra flags go to demo/run_all.py
#   bash scripts/demo.sh --retrain  # a second run serves what is trained; this trains it again
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
LOGDIR=${LOGDIR:-logs}
PORT=${PORT:-6006}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
install() {
  .venv/bin/python -m pip install -q --upgrade pip
  # The demos train on Keras with TensorFlow; the LoRA demo is a keras-hub model.
  .venv/bin/python -m pip install -q -e ".[demo]"
}
# pip removes the installed package before it puts the new one in place: one install at a time,
# and none while something else holds this lock shared (the test suite's workers do, per test).
if command -v flock >/dev/null 2>&1; then
  exec 9>.venv/tb-attention-install.lock
  flock 9
  install
  exec 9>&-
else
  install
fi

export TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/python -m demo.run_all --logdir "$LOGDIR" "$@"

if [ "${TB_ATTENTION_NO_SERVER:-0}" != "0" ]; then
  echo "Logs are in $LOGDIR. Start TensorBoard with: .venv/bin/tensorboard --logdir $LOGDIR"
  exit 0
fi
echo "Open http://127.0.0.1:$PORT/#attention"
exec .venv/bin/tensorboard --logdir "$LOGDIR" --host 127.0.0.1 --port "$PORT"
