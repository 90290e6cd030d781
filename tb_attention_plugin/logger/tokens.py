"""Token strings for the attention axes: from lists the user gives, or ids and a vocabulary.

Tokens have a role: `"tokens"` for single-sequence models, `"source"` and `"target"` for
encoder-decoder models. `resolve_tokens` turns the `AttentionLogger`'s `tokens=` and
`vocabulary=` arguments into `{role: one token list per example}`; `roles_for` says which roles
a layer's query and key axes take, and `tokens_for` cuts a role's lists to fit an axis.

Example:

```python
to_strings = vocabulary_lookup(["<pad>", "i", "like", "tea"])
to_strings(np.array([[1, 2, 3, 0]]))   # [["i", "like", "tea", "<pad>"]]
find_token_ids({"token_ids": ids, "padding_mask": mask})   # {"tokens": ids}
find_padding_masks({"token_ids": ids, "padding_mask": mask})   # {"tokens": mask}
lists = resolve_tokens((source_ids, target_ids), vocabulary={"source": en, "target": zh})
roles_for("decoder/cross", cross=True, causal=False, token_lists=lists)  # ("target", "source")
```
"""

import fnmatch

import numpy as np

# Token roles an attention layer's axes can take.
SOURCE = "source"
TARGET = "target"
TOKENS = "tokens"
ROLES = (SOURCE, TARGET, TOKENS)
# The roles a dict in `tokens=` or `vocabulary=` may name.
DICT_ROLES = (SOURCE, TARGET)
# The AttentionLogger argument that holds each role's tokens, for messages.
ARGUMENT_NAMES = {SOURCE: 'tokens["source"]', TARGET: 'tokens["target"]', TOKENS: "tokens"}


def _vocabulary_list(vocabulary):
    """Returns the vocabulary as a list of strings (index = token id)."""
    if hasattr(vocabulary, "get_vocabulary"):  # StringLookup, TextVectorization, IntegerLookup
        words = vocabulary.get_vocabulary()
    elif isinstance(vocabulary, (list, tuple)) or (
        isinstance(vocabulary, np.ndarray) and vocabulary.ndim == 1
    ):
        words = list(vocabulary)
    else:
        raise TypeError(
            "vocabulary must be a list of strings, a keras.layers.StringLookup or a "
            "keras.layers.TextVectorization, got %s" % type(vocabulary).__name__
        )
    result = []
    for word in words:
        if isinstance(word, bytes):
            word = word.decode("utf-8", errors="replace")
        result.append(str(word))
    if not result:
        raise ValueError("vocabulary is empty")
    return result


def vocabulary_lookup(vocabulary):
    """Returns a function mapping integer ids `[B, T]` to lists of strings.

    Ids outside the vocabulary become `"<id 1234>"` rather than failing, so a vocabulary that
    is slightly too short still labels the rest.
    """
    words = _vocabulary_list(vocabulary)

    def to_strings(ids):
        array = np.asarray(ids)
        if array.ndim == 1:
            array = array[np.newaxis]
        return [
            [words[i] if 0 <= i < len(words) else "<id %d>" % i for i in row.tolist()]
            for row in array.astype(np.int64)
        ]

    return to_strings


def _is_id_array(value):
    try:
        array = np.asarray(value)
    except Exception:
        return False
    return array.ndim == 2 and np.issubdtype(array.dtype, np.integer)


def find_token_ids(probe):
    """Finds the token-id arrays in a probe batch.

    Returns a dict with `"tokens"` (one id array: a single-sequence model) or `"source"` and
    `"target"` (two: an encoder-decoder model), or an empty dict when there are no ids.

    - an integer array `[B, T]` is `tokens`;
    - in a dict, keys containing `token_ids` count (keras-hub's `token_ids`,
      `encoder_token_ids`, `decoder_token_ids`), else every integer `[B, T]` value; keys
      naming `encoder`/`source` and `decoder`/`target` decide the roles;
    - in a tuple or list, the first two integer `[B, T]` arrays are `source`, `target`.
    """
    if isinstance(probe, dict):
        candidates = [k for k in probe if "token_ids" in str(k) and _is_id_array(probe[k])]
        if not candidates:
            candidates = [k for k in probe if _is_id_array(probe[k])]
        if len(candidates) == 1:
            return {TOKENS: np.asarray(probe[candidates[0]])}
        source = [k for k in candidates if any(s in str(k) for s in ("encoder", "source"))]
        target = [k for k in candidates if any(s in str(k) for s in ("decoder", "target"))]
        if source and target:
            return {SOURCE: np.asarray(probe[source[0]]), TARGET: np.asarray(probe[target[0]])}
        if len(candidates) >= 2:
            first, second = candidates[:2]
            return {SOURCE: np.asarray(probe[first]), TARGET: np.asarray(probe[second])}
        return {}
    if isinstance(probe, (list, tuple)):
        arrays = [np.asarray(v) for v in probe if _is_id_array(v)]
        if len(arrays) == 1:
            return {TOKENS: arrays[0]}
        if len(arrays) >= 2:
            return {SOURCE: arrays[0], TARGET: arrays[1]}
        return {}
    if _is_id_array(probe):
        return {TOKENS: np.asarray(probe)}
    return {}


def find_padding_masks(probe):
    """The padding masks of a dict probe by role, as `find_token_ids` names its ids: one key
    ending in `padding_mask` is `tokens`; with several, keys naming `encoder`/`source` and
    `decoder`/`target` decide. Returns `{role: bool [B, T]}` (True = a real token)."""
    if not isinstance(probe, dict):
        return {}
    masks = {str(k): np.asarray(v).astype(bool) for k, v in probe.items()
             if str(k).endswith("padding_mask") and np.ndim(v) == 2}
    if len(masks) == 1:
        return {TOKENS: next(iter(masks.values()))}
    result = {}
    for key, mask in masks.items():
        if any(s in key for s in ("encoder", "source")):
            result[SOURCE] = mask
        elif any(s in key for s in ("decoder", "target")):
            result[TARGET] = mask
    return result


def _as_token_lists(tokens, name):
    """Normalises user token lists: one list for all examples, or one list per example."""
    if tokens is None:
        return None
    if isinstance(tokens, np.ndarray):
        tokens = tokens.tolist()
    if not isinstance(tokens, (list, tuple)) or not tokens:
        raise ValueError("%s must be a non-empty list of strings or of string lists" % name)
    if all(isinstance(t, (str, bytes)) for t in tokens):
        tokens = [tokens]
    result = []
    for example in tokens:
        if isinstance(example, np.ndarray):
            example = example.tolist()
        if not isinstance(example, (list, tuple)):
            raise ValueError("%s must be a list of strings or one list per example" % name)
        result.append([
            t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t)
            for t in example
        ])
    return result


def _by_role(value, name):
    """`{role: value}` of a `tokens=` or `vocabulary=` argument: one value or a dict by role."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return {TOKENS: value}
    if not value or any(key not in DICT_ROLES for key in value):
        raise ValueError(
            '%s as a dict takes the keys "source" and "target" (encoder-decoder models), got %s'
            % (name, ", ".join(repr(key) for key in value) if value else "an empty dict")
        )
    return {role: v for role, v in value.items() if v is not None}


def resolve_tokens(probe, tokens=None, vocabulary=None):
    """Returns `{role: list of token lists}` for the roles that have tokens.

    Args:
      probe: The probe batch (its integer `[B, T]` arrays are looked up in `vocabulary`).
      tokens: One list for all examples, a list per example (role `"tokens"`), or a dict
        `{"source": ..., "target": ...}` of those.
      vocabulary: One vocabulary (list of strings, `StringLookup`, `TextVectorization`) for
        every role, or a dict `{"source": ..., "target": ...}` of them; single-sequence ids are
        looked up in `"source"`.

    Explicit lists win, role by role; ids found in `probe` fill the other roles. Raises
    `ValueError` when a vocabulary is given and no role gets tokens (no ids in the probe).
    """
    result = {}
    for role, value in _by_role(tokens, "tokens").items():
        result[role] = _as_token_lists(value, ARGUMENT_NAMES[role])
    vocabularies = _by_role(vocabulary, "vocabulary")
    if TOKENS in vocabularies:  # one vocabulary for every role
        vocabularies = dict.fromkeys(ROLES, vocabularies[TOKENS])
    elif SOURCE in vocabularies:
        vocabularies[TOKENS] = vocabularies[SOURCE]
    if vocabularies:
        for role, ids in find_token_ids(probe).items():
            if role not in result and vocabularies.get(role) is not None:
                result[role] = vocabulary_lookup(vocabularies[role])(ids)
        if not result:
            raise ValueError(
                "a vocabulary was given but the probe holds no integer token-id array [B, T]; "
                "pass tokens= instead"
            )
    return result


def roles_for(tag, cross, causal, token_lists, token_roles=()):
    """`(query_role, key_role)` of a layer call.

    The first `(pattern, roles)` of `token_roles` whose fnmatch pattern matches `tag` decides;
    otherwise single-sequence tokens serve both axes, and with source and target tokens
    cross-attention is (target, source), causal self-attention (target, target) and other
    self-attention (source, source).
    """
    for pattern, roles in token_roles:
        if fnmatch.fnmatchcase(tag, pattern):
            return tuple(roles)
    if TOKENS in token_lists and not (SOURCE in token_lists or TARGET in token_lists):
        return TOKENS, TOKENS
    if cross:
        return TARGET, SOURCE
    if causal:
        return TARGET, TARGET
    return SOURCE, SOURCE


def axis_tokens(token_lists, role, batch, length):
    """`tokens_for` a layer axis of `role`, falling back to single-sequence tokens."""
    if role not in token_lists and TOKENS in token_lists:
        role = TOKENS
    return tokens_for(token_lists, role, batch, length)


def tokens_for(token_lists, role, batch, length, keep=None):
    """Token lists of one role for `batch` examples of `length` positions, cropped to `keep`.

    A single list applies to every example. Returns None when the role has no tokens; raises
    `ValueError` (the caller reports it once) when the lists do not fit the attention axis.
    """
    lists = token_lists.get(role)
    if lists is None:
        return None
    argument = ARGUMENT_NAMES[role]
    if len(lists) == 1 and batch > 1:
        lists = lists * batch
    if len(lists) < batch:
        raise ValueError(
            "%s holds %d token lists for %d probe examples" % (argument, len(lists), batch)
        )
    lists = lists[:batch]
    for example in lists:
        if len(example) != length:
            raise ValueError(
                "%s has %d entries but the attention axis has %d positions"
                % (argument, len(example), length)
            )
    keep = length if keep is None else keep
    return [example[:keep] for example in lists]
