"""A keras-hub causal LM of a modern family, LoRA-fine-tuned on text, its attention in the tab.

The journey of Keras' "fine-tune with LoRA" guides, offline and small: a Llama-style
`keras_hub.models.LlamaCausalLM` (grouped-query attention: 4 query heads sharing 2 key/value
heads, rotary positions) with its own preprocessor and a SentencePiece tokenizer trained here on
the demo's English sentences, first trained briefly on them, then `backbone.enable_lora(rank=4)`
and fine-tuned on sentences about tea with `AttentionLogger(log_dir, probe=[...strings...])`.
The Attention tab shows the probe's words as the tokenizer cut them (`<s>` first), one tag per
attention layer (`transformer_layer_<i>/self_attention`), causal.

Nothing is downloaded: the sentences come from `demo/translation_data.py`, the tokenizer is
trained from them in memory.

Usage (in the main job's virtualenv):

```
.venv/bin/python -m demo.keras_hub_lora --logdir logs
.venv/bin/tensorboard --logdir logs
```
"""

import argparse
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROBE = ["he likes hot green tea in the garden", "she drinks tea"]
FINE_TUNING = ["he likes hot green tea in the garden", "she drinks tea in the market",
               "we drink green tea", "they like hot tea", "she likes tea with the birds"]


def english_sentences(count, seed=0):
    """`count` English sentences of the translation demo's grammar."""
    from demo import translation_data

    return [" ".join(pair.source) for pair in translation_data.generate_pairs(count, seed=seed)]


def train_tokenizer(sentences, vocabulary_size=160):
    """A keras-hub `LlamaTokenizer` from a SentencePiece word model trained on `sentences`."""
    import keras_hub
    import sentencepiece

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=proto, vocab_size=vocabulary_size,
        model_type="word", pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>",
        unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>", hard_vocab_limit=False,
        minloglevel=2)
    return keras_hub.models.LlamaTokenizer(proto=proto.getvalue())


def build_causal_lm(tokenizer, sequence_length=16, width=64):
    """A 2-layer Llama-style causal LM (GQA 4/2 heads, RoPE) with its preprocessor."""
    import keras
    import keras_hub

    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_query_heads=4,
        num_key_value_heads=2, hidden_dim=width, intermediate_dim=2 * width)
    preprocessor = keras_hub.models.LlamaCausalLMPreprocessor(
        tokenizer, sequence_length=sequence_length)
    causal_lm = keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=preprocessor)
    causal_lm.compile(optimizer=keras.optimizers.Adam(3e-3), weighted_metrics=[])
    return causal_lm


def train(logdir, run_name="keras_hub_lora", small=False, verbose=2):
    """Trains the model on the demo sentences, then LoRA-fine-tunes it with the logger.

    Returns `{"loss": last fine-tuning loss, "trainable": trainable weights under LoRA,
    "probe": PROBE}`."""
    import keras

    import tb_attention_plugin as tba

    keras.utils.set_random_seed(0)
    sentences = english_sentences(300 if small else 1200)
    causal_lm = build_causal_lm(train_tokenizer(sentences + FINE_TUNING))
    causal_lm.fit(sentences, epochs=1 if small else 2, batch_size=16, verbose=verbose)

    causal_lm.backbone.enable_lora(rank=4)
    causal_lm.compile(optimizer=keras.optimizers.Adam(5e-3), weighted_metrics=[])
    run_dir = os.path.join(logdir, run_name)
    logger = tba.AttentionLogger(run_dir, probe=PROBE, update_freq=10)
    history = causal_lm.fit(
        FINE_TUNING * 8, epochs=2 if small else 4, batch_size=8, verbose=verbose,
        callbacks=[keras.callbacks.TensorBoard(run_dir), logger])
    return {"loss": float(history.history["loss"][-1]),
            "trainable": len(causal_lm.backbone.trainable_weights), "probe": PROBE}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--small", action="store_true", help="fewer sentences and epochs")
    args = parser.parse_args(argv)
    print(train(args.logdir, small=args.small))


if __name__ == "__main__":
    main()
