"""The workflow around keras-hub models, as Keras' guides write it: a causal LM with its
preprocessor and tokenizer, LoRA, `fit` on strings with a probe of strings, mixed precision,
Keras on JAX; and the MultiHeadAttention-based Whisper and SigLIP, found without a warning.

Logs are read back through TensorBoard's data provider.
"""

import os
import subprocess
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tb_attention_plugin as tba  # noqa: E402
from tb_attention_plugin.logger import capture  # noqa: E402
import callback_helpers as helpers  # noqa: E402

keras_hub = pytest.importorskip("keras_hub")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROBE = ["he likes hot green tea", "she drinks tea"]

# The LoRA journey as a script, so that it also runs with KERAS_BACKEND=jax (a new process).
JOURNEY = r'''
import os, sys, json, warnings
sys.path.insert(0, os.getcwd())
import keras
import numpy as np
import tb_attention_plugin as tba
from demo import keras_hub_lora

keras.utils.set_random_seed(0)
sentences = keras_hub_lora.english_sentences(64)
causal_lm = keras_hub_lora.build_causal_lm(keras_hub_lora.train_tokenizer(sentences + keras_hub_lora.FINE_TUNING),
                                           width=32)
causal_lm.backbone.enable_lora(rank=4)
causal_lm.compile(optimizer=keras.optimizers.Adam(5e-3), weighted_metrics=[])
frozen = [np.array(keras.ops.convert_to_numpy(w)) for w in causal_lm.backbone.non_trainable_weights]
lora = [np.array(keras.ops.convert_to_numpy(w)) for w in causal_lm.backbone.trainable_weights]
logger = tba.AttentionLogger(sys.argv[1], probe=%r, update_freq=2)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", tba.AttentionLoggerWarning)
    causal_lm.fit(sentences, epochs=1, batch_size=16, verbose=0, callbacks=[logger])
print("RESULT " + json.dumps({
    "warnings": [str(w.message) for w in caught
                 if issubclass(w.category, tba.AttentionLoggerWarning)],
    "lora_trainable": len(lora),
    "frozen_kept": all(np.array_equal(a, keras.ops.convert_to_numpy(b)) for a, b in
                       zip(frozen, causal_lm.backbone.non_trainable_weights)),
    "lora_trained": any(not np.array_equal(a, keras.ops.convert_to_numpy(b)) for a, b in
                        zip(lora, causal_lm.backbone.trainable_weights)),
}))
''' % (PROBE,)


def run_journey(logdir, backend):
    import json

    environment = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", JOURNEY, str(logdir)], cwd=REPO,
                            env=environment, capture_output=True, text=True, timeout=900,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def assert_journey_logs(logdir, result):
    assert result["warnings"] == []
    assert result["lora_trainable"] > 0 and result["lora_trained"] and result["frozen_kept"]
    attention, _ = helpers.read_logs(logdir)
    run = attention["train"]
    assert sorted(run) == ["transformer_layer_0/self_attention",
                           "transformer_layer_1/self_attention"]
    for steps in run.values():
        assert len(steps) >= 3
        stored = steps[max(steps)]
        header = stored["header"]
        assert header["query_tokens"][0] == ["<s>", " he", " likes", " hot", " green", " tea"]
        assert header["query_tokens"][1] == ["<s>", " she", " drinks", " tea", "<pad>", "<pad>"]
        weights = stored["weights"]
        assert weights.shape == (2, 4, 6, 6)
        helpers.assert_causal(weights, "lora")
        assert np.isnan(weights[1, :, :, 4:]).all()


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_lora_fine_tuning_on_strings(backend, tmp_path):
    """Keras' LoRA journey with a Llama-style causal LM: `enable_lora(rank=4)`, `fit` on
    strings, `AttentionLogger(log_dir, probe=[strings])`: the tab gets the prompt's words,
    every query head, causal weights; only the LoRA weights train."""
    assert_journey_logs(tmp_path, run_journey(tmp_path, backend))


def test_mixed_bfloat16_gemma(tmp_path):
    """Under `mixed_bfloat16` a Gemma 2-style model (soft-cap, window) is logged; its stored
    rows still sum to 1 and it stays causal inside its window."""
    import keras_hub_families as families

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        family = families.FAMILIES["gemma2"]
        model = families.trainable_model(family)
        data = families.probe_inputs(family, count=8, seed=1)
        logger = tba.AttentionLogger(str(tmp_path), probe=families.probe_inputs(family),
                                     update_freq=1)
        with warnings.catch_warnings():
            warnings.simplefilter("error", tba.AttentionLoggerWarning)
            model.fit(data, np.roll(data["token_ids"], -1, 1), batch_size=4, epochs=1,
                      verbose=0, callbacks=[logger])
    finally:
        keras.config.set_dtype_policy(previous)
    attention, _ = helpers.read_logs(tmp_path)
    run = attention["train"]
    assert sorted(run) == ["decoder_block_0/attention", "decoder_block_1/attention"]
    for tag, steps in run.items():
        weights = steps[max(steps)]["weights"]
        assert weights.shape == (2, 4, families.LENGTH, families.LENGTH)
        row_error, above, outside = families.stored_checks(
            weights, True, 4 if tag.startswith("decoder_block_0") else None)
        assert row_error < 0.03 and above == 0 and outside == 0, (tag, row_error, above, outside)


def test_whisper_and_siglip_are_read_through_their_multi_head_attention():
    """Whisper (encoder, decoder causal self-attention, cross-attention) and SigLIP's vision
    encoder (self-attention, and its pooling head's probe query over the patches)."""
    whisper = keras_hub.models.WhisperBackbone(
        vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        num_mels=8, max_encoder_sequence_length=16, max_decoder_sequence_length=8)
    siglip = keras_hub.models.SigLIPVisionEncoder(
        patch_size=4, hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16,
        image_shape=(16, 16, 3))
    features = {"encoder_features": np.random.rand(2, 16, 8).astype("float32"),
                "decoder_token_ids": np.ones((2, 8), "int32"),
                "decoder_padding_mask": np.ones((2, 8), "int32")}
    images = {"images": np.random.rand(2, 16, 16, 3).astype("float32")}
    expected = {
        "whisper": {"transformer_encoder_layer_0/self_attention_layer": ((2, 2, 8, 8), False),
                    "transformer_decoder_layer_0/cross_attention": ((2, 2, 8, 8), False),
                    "transformer_decoder_layer_0/self_attention": ((2, 2, 8, 8), True)},
        "siglip": {"encoder_block_0/self_attn": ((2, 2, 16, 16), False),
                   "head/attention": ((2, 2, 1, 16), False)},
    }
    for name, model, inputs in (("whisper", whisper, features), ("siglip", siglip, images)):
        sites, unreadable = capture.find_attention_layers(model)
        assert unreadable == []
        records = capture.capture_attention(model, inputs, sites).records
        assert {r.tag: (r.scores.shape, r.causal) for r in records} == expected[name]
        assert {r.source for r in records} == {"stock"}
        for record in records:
            np.testing.assert_allclose(record.scores.sum(-1), 1, atol=1e-5)
