"""The chunked (POOLED) capture of GroupedQueryAttention, Attention and AdditiveAttention
(issue 11, "capture without materialising"), on the TensorFlow and JAX backends.

Each backend runs tests/pooled_layer_checks.py in its own process (`KERAS_BACKEND` is read
once per process): the layers' outputs in the capture pass equal the unpatched layers', no
softmax ever sees more than one chunk of query rows, and the pooled means, maxes, windows and
max logits equal those of the layers' own `return_attention_scores=True` scores.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = os.path.join(REPO, "tests", "pooled_layer_checks.py")


def run_checks(backend, *arguments):
    if importlib.util.find_spec(backend) is None:
        pytest.skip("the %s package is not installed in this environment" % backend)
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-W", "ignore", CHECKS] + list(arguments),
                            cwd=REPO, env=environment, timeout=900, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ok %s" % backend in result.stdout


def test_pooled_capture_on_tensorflow_eager_traced_and_logged():
    # Three chunk sizes, the traced graph of the callback's default, and the logs read back.
    run_checks("tensorflow")


def test_pooled_capture_on_jax():
    run_checks("jax", "--quick")
