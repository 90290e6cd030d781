"""Probes of raw text (or images) for keras-hub task models, labelled with the tokenizer's tokens.

A keras-hub `Task` (`CausalLM`, `Seq2SeqLM`, `TextClassifier`, `ImageClassifier`, ...) is trained
on what its preprocessor takes: strings, a dict `{"encoder_text": [...], "decoder_text": [...]}`
or images. `prepare` turns such a probe into the model's inputs with the model's own
preprocessor, once, and names every position with the tokenizer's token strings:

- language models (`CausalLM`, `Seq2SeqLM`) use `preprocessor.generate_preprocess`, the prompt
  as generation sees it (start token, no end token, not shifted as training's `(x, y, w)` is);
  other tasks use `preprocessor(x)` and keep its `x`;
- positions no example uses (every example's padding mask `False`) are cut from the end, so a
  preset's `sequence_length=1024` does not give 1000 padding columns; the padding left (shorter
  examples) stays in the `padding_mask`, which the model turns into masked attention;
- token strings are `tokenizer.id_to_token(id)`: special tokens (`<|endoftext|>`, `[CLS]`,
  `<s>`, `<pad>`) keep their spelling, other byte-level BPE tokens are decoded to their text
  (GPT-2's `"Ġfox"` is `" fox"`), SentencePiece's `"▁"` is a space, and line breaks and tabs are
  written `\\n`, `\\r`, `\\t` so that a label stays on one line;
- special tokens (the tokenizer's `special_token_ids`) and padding positions (the padding mask
  `False`) are flagged per position, for the tab to mark on the axes.

Example:

```python
causal_lm = keras_hub.models.GPT2CausalLM.from_preset("gpt2_base_en")
holds_text(["The quick brown fox"])                      # True
prepared = prepare(causal_lm, ["The quick brown fox"])
prepared.inputs            # {"token_ids": int32 [1, 5], "padding_mask": bool [1, 5]}
prepared.tokens            # {"tokens": [["<|endoftext|>", "The", " quick", " brown", " fox"]]}
prepared.special           # {"tokens": [[True, False, False, False, False]]}
```
"""

import collections

import keras
import numpy as np

from tb_attention_plugin.logger import probe as probe_utils
from tb_attention_plugin.logger import tokens as token_utils

# Control characters written as escapes in labels (a label is one line of an axis).
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

Prepared = collections.namedtuple("Prepared", ["inputs", "tokens", "special"])
Prepared.__doc__ = """A preprocessed probe: `inputs` (the model's input structure, numpy arrays),
`tokens` (`{role: one token list per example}` as `tokens.resolve_tokens` gives, empty
without a tokenizer) and `special` (`{role: one list of booleans per example}`, the same
shape: True for special tokens and padding)."""


def _is_text(value):
    if isinstance(value, (str, bytes)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "USO" and value.size > 0 and _is_text(value.flat[0])
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_is_text(item) for item in value)
    return False


def holds_text(batch):
    """Whether a probe is raw text: strings, a list/array of them, or a dict holding some."""
    if isinstance(batch, dict):
        return any(_is_text(value) for value in batch.values())
    return _is_text(batch)


def task_preprocessor(model):
    """The model's keras-hub preprocessor, or None (a plain model, or a task without one)."""
    return getattr(model, "preprocessor", None)


def wants_preprocessing(model, batch):
    """Whether `batch` is what the task model's `fit` takes rather than model inputs: text, or an
    image batch for a preprocessor without a tokenizer (an image classifier's)."""
    if holds_text(batch):
        return True
    preprocessor = task_preprocessor(model)
    if preprocessor is None or getattr(preprocessor, "tokenizer", None) is not None:
        return False
    return getattr(preprocessor, "image_converter", None) is not None and (
        probe_utils.is_image_batch(batch))


def prepare(model, batch):
    """`Prepared(inputs, tokens)` of a raw probe, from the task model's own preprocessor.

    Raises `ValueError` when the model has no preprocessor (text cannot be turned into inputs
    then) or the preprocessor refuses the probe.
    """
    preprocessor = task_preprocessor(model)
    if preprocessor is None:
        raise ValueError(
            "probe holds text (or raw task inputs) but %s has no preprocessor to turn it into "
            "model inputs: use a keras-hub task with its preprocessor (e.g. "
            "keras_hub.models.GPT2CausalLM.from_preset(...)), or pass token ids as probe= "
            "(with vocabulary= or tokens= for the axes)" % type(model).__name__)
    try:
        inputs = _preprocessed(preprocessor, _as_lists(batch))
    except Exception as e:
        raise ValueError("the %s could not preprocess probe= (%s: %s); give it what the "
                         "task's fit takes, e.g. a list of strings"
                         % (type(preprocessor).__name__, type(e).__name__, e)) from e
    inputs = trim_padding(inputs)
    tokenizer = getattr(preprocessor, "tokenizer", None)
    tokens, special = {}, {}
    if tokenizer is not None:
        padding = token_utils.find_padding_masks(inputs)
        for role, ids in token_utils.find_token_ids(inputs).items():
            tokens[role] = token_strings(tokenizer, ids)
            special[role] = special_flags(tokenizer, ids, padding.get(role))
    return Prepared(inputs, tokens, special)


def _as_lists(batch):
    """Tuples of strings as lists (keras-hub reads a tuple as several features)."""
    if isinstance(batch, dict):
        return {key: _as_lists(value) for key, value in batch.items()}
    if isinstance(batch, tuple) and _is_text(batch):
        return list(batch)
    return batch


def _preprocessed(preprocessor, batch):
    if hasattr(preprocessor, "generate_preprocess"):  # language models: the prompt as is
        outputs = preprocessor.generate_preprocess(batch)
    else:
        outputs = preprocessor(batch)
    x, _, _ = keras.utils.unpack_x_y_sample_weight(outputs)
    return keras.tree.map_structure(keras.ops.convert_to_numpy, x)


def trim_padding(inputs):
    """Cuts the trailing positions that every example pads, per padding mask of a dict input.

    A key `<prefix>padding_mask` `[B, T]` cuts every `[B, T, ...]` array whose key starts with
    `<prefix>` (BERT's `token_ids`, `segment_ids`; BART's `encoder_*` and `decoder_*` apart).
    At least one position stays.
    """
    if not isinstance(inputs, dict):
        return inputs
    inputs = dict(inputs)
    for key in [k for k in inputs if str(k).endswith("padding_mask")]:
        mask = np.asarray(inputs[key])
        if mask.ndim != 2:
            continue
        used = np.flatnonzero(mask.astype(bool).any(axis=0))
        keep = int(used[-1]) + 1 if used.size else 1
        prefix = str(key)[:-len("padding_mask")]
        for name, value in inputs.items():
            if (str(name).startswith(prefix) and getattr(value, "ndim", 0) >= 2
                    and value.shape[:2] == mask.shape):
                inputs[name] = value[:, :keep]
    return inputs


def token_strings(tokenizer, ids):
    """One list of readable token strings per row of `ids` `[B, T]` (see the module doc)."""
    special = set(int(i) for i in (getattr(tokenizer, "special_token_ids", None) or ()))
    readable = _readable_text(tokenizer)
    labels = {}
    for token_id in np.unique(ids).tolist():
        try:
            token = tokenizer.id_to_token(int(token_id))
        except Exception:
            labels[token_id] = "<id %d>" % token_id
            continue
        if isinstance(token, bytes):
            token = token.decode("utf-8", errors="replace")
        labels[token_id] = str(token) if token_id in special else readable(str(token))
    return [[labels[i] for i in row] for row in np.asarray(ids).tolist()]


def special_flags(tokenizer, ids, padding_mask=None):
    """One list of booleans per row of `ids` `[B, T]`: True where the id is one of the
    tokenizer's `special_token_ids` or the position is padding (`padding_mask` False; a mask of
    another shape is not used)."""
    ids = np.asarray(ids)
    special = [int(i) for i in (getattr(tokenizer, "special_token_ids", None) or ())]
    flags = np.isin(ids, special)
    if padding_mask is not None and np.shape(padding_mask) == ids.shape:
        flags |= ~np.asarray(padding_mask, bool)
    return flags.tolist()


def _class_names(tokenizer):
    return {cls.__name__ for cls in type(tokenizer).__mro__}


def _readable_text(tokenizer):
    names = _class_names(tokenizer)
    if "BytePairTokenizer" in names:
        decode = _byte_level_decoder()
    elif "SentencePieceTokenizer" in names:
        decode = lambda token: token.replace("\u2581", " ")  # noqa: E731
    else:
        decode = lambda token: token  # noqa: E731
    return lambda token: "".join(_ESCAPES.get(c, c) for c in decode(token))


def _byte_level_decoder():
    """GPT-2's byte-level alphabet back to text: each of the 256 bytes is one printable
    character in the vocabulary (`Ġ` is the space byte); a token holding part of a multi-byte
    character shows the bytes it has as `\\xNN`."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    byte_of = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in byte_of.values():
            byte_of[chr(256 + shifted)] = b
            shifted += 1

    def decode(token):
        if any(c not in byte_of for c in token):
            return token  # not byte-level text (an added token): as the tokenizer spells it
        raw = bytes(byte_of[c] for c in token)
        return raw.decode("utf-8", errors="backslashreplace")

    return decode
