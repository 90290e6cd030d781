"""The attention summary op for TensorFlow, called the way `tf.summary.image` is called."""

from tb_attention_plugin import encoding
from tb_attention_plugin import health_summary
from tb_attention_plugin import metadata
from tb_attention_plugin import names


def attention(
    name,
    weights,
    step=None,
    *,
    query_tokens=None,
    key_tokens=None,
    mask=None,
    images=None,
    image_grid=None,
    prefix_tokens=None,
    description=None,
    reduced=None,
    max_bytes=None,
    windows=None,
    kv_heads=None,
    kv_group_size=None,
    query_special=None,
    key_special=None,
):
    """Writes attention weights to the default summary writer, for the Attention tab.

    Args:
      name: Tag of the summary, usually the attention layer's name. Enclosing
        `tf.name_scope`s are prepended, as for every `tf.summary` op. A tag holding a quote,
        backslash or control character is refused (`ValueError`): TensorBoard's data server
        cannot read such tags back.
      weights: Post-softmax attention probabilities in [0, 1], shaped `[Tq, Tk]`,
        `[heads, Tq, Tk]` or `[batch, heads, Tq, Tk]` (a Keras score tensor as it comes).
        Stored with 8 bits per value (max. absolute error 0.002), see docs/format.md.
      step: Explicit `int64` step; defaults to `tf.summary.experimental.get_step()`.
      query_tokens: Token strings of the query axis: one list of `Tq` strings for every
        example, or one list per example. Optional. A token over 256 characters is stored as
        its first 255 and "…".
      key_tokens: Same for the key axis (`Tk`); for cross-attention, the source tokens.
      mask: Optional boolean array broadcastable to `weights`' shape; `False` marks padded or
        masked positions, which the tab greys out instead of drawing zeros.
      images: Optional probe images `[batch, height, width, channels]` for Vision Transformers;
        the tab draws attention over them. At most 2048 x 2048 pixels (8192 on a side).
      image_grid: `(rows, cols)` of the patch grid; inferred for square grids.
      prefix_tokens: Number of non-patch key positions before the patches (class token);
        inferred together with the grid.
      description: Optional long-form description, shown in the tab.
      reduced: Optional JSON-serialisable note of what the caller dropped to meet a size
        budget (stored in the step header, see docs/format.md), e.g. `{"source_shape":
        [32, 12, 128, 128], "examples": 2, "heads": 12, "tokens": [0, 64]}`.
      max_bytes: Optional size budget of this step of this tag, in bytes. When the full
        weights would take more, the step is stored POOLED (docs/format.md, "Pooled steps"):
        block means and maxes over the whole matrix (the smallest power-of-two block that
        fits) plus exact windows, by default the last queries' rows over all keys and the
        first queries.
      windows: With `max_bytes`, the exact windows to keep when pooled, as
        `[(name, (q0, q1), (k0, k1)), ...]` (half-open query and key ranges).
      kv_heads: For grouped-query attention, the number of key/value heads the weights'
        heads (its query heads) read: query head `h` reads key/value head
        `h // (heads / kv_heads)`. The tab labels each head with its key/value head and
        groups the heads by it. The number of heads must be a multiple of it.
      kv_group_size: The same fact as query heads per key/value head
        (`num_query_heads // num_key_value_heads`), for weights holding only a layer's first
        heads. Give at most one of the two.
      query_special: Optional booleans per query position, True for special tokens (`<s>`,
        `[CLS]`, `<|endoftext|>`) and padding: one list of `Tq` for every example, or one per
        example (`[batch, Tq]`). The tab writes those labels muted and in italics.
      key_special: Same for the key axis (`Tk`).

    Returns:
      True on success, False if no summary was written because no default writer was set
      or recording is off (as every `tf.summary` op).

    Raises:
      ValueError, TypeError: bad shapes, dtypes or values; nothing is written then.

    Example:

    ```python
    writer = tf.summary.create_file_writer("logs/run1")
    with writer.as_default(step=0):
        _, weights = scaled_dot_product_attention(q, k, v, mask=None)
        tb_attention_plugin.attention(
            "encoder/self_attention", weights,
            query_tokens=["i", "like", "tea"], key_tokens=["i", "like", "tea"])
        # A grouped-query layer (8 query heads over 2 key/value heads), "<s>" and "<pad>"
        # marked as special tokens:
        tokens = ["<s>", "i", "like", "tea", "<pad>"]
        special = [t in ("<s>", "<pad>") for t in tokens]
        tb_attention_plugin.attention(
            "decoder/layer_0/self_attention", gqa_weights, kv_heads=2,
            query_tokens=tokens, key_tokens=tokens, query_special=special, key_special=special)
    ```
    """
    import tensorflow as tf  # lazily: the plugin loader imports this package without TF

    summary_metadata = metadata.create_summary_metadata(description)
    encode_kwargs = dict(image_grid=image_grid, prefix_tokens=prefix_tokens, reduced=reduced,
                         max_bytes=max_bytes, windows=windows, kv_heads=kv_heads,
                         kv_group_size=kv_group_size)
    # The arguments that may be tensors (in a tf.function they are read at run time).
    named = dict(query_tokens=query_tokens, key_tokens=key_tokens, mask=mask, images=images,
                 query_special=query_special, key_special=key_special)

    def blobs():
        if tf.executing_eagerly():
            return tf.constant(encoding.encode_attention(weights, **named, **encode_kwargs),
                               dtype=tf.string)
        return _graph_blobs(tf, weights, named, encode_kwargs)

    summary_scope = tf.summary.experimental.summary_scope
    with summary_scope(name, "attention_summary", values=[weights, step]) as (tag, _):
        # Checked on the final tag, name scopes included, before anything is written.
        names.check(tag, "tag")
        return tf.summary.write(tag=tag, tensor=blobs, step=step, metadata=summary_metadata)


def _graph_blobs(tf, weights, named, encode_kwargs):
    """Inside `tf.function`: check what is known at trace time, encode at run time. `named`:
    the arguments that may be tensors (tokens, mask, images, special flags)."""
    weights = tf.convert_to_tensor(weights)
    rank = weights.shape.rank
    if rank is not None and rank not in (2, 3, 4):
        raise ValueError(
            "weights must have shape [Tq, Tk], [heads, Tq, Tk] or [batch, heads, Tq, Tk]; got "
            "shape %s" % (weights.shape,)
        )
    if not (weights.dtype.is_floating or weights.dtype.is_integer):
        raise TypeError("weights must hold real numbers, got dtype %s" % weights.dtype.name)
    if weights.dtype.is_floating and weights.dtype != tf.float32:
        weights = tf.cast(weights, tf.float32)  # numpy has no bfloat16

    # Arguments that are tensors travel through py_function; Python values stay in the closure.
    tensor_names = [k for k, v in named.items() if v is not None and tf.is_tensor(v)]
    inputs = [weights] + [named[k] for k in tensor_names]

    def encode(*values):
        args = dict(named)
        for key, value in zip(tensor_names, values[1:]):
            args[key] = value.numpy()
        blobs = encoding.encode_attention(values[0].numpy(), **args, **encode_kwargs)
        # A returned list would be read as a list of outputs: return one rank-1 tensor.
        return tf.constant(blobs, dtype=tf.string)

    result = tf.py_function(encode, inputs, Tout=tf.string)
    result.set_shape([None])
    return result


def write_health(tag, result, step=None, *, scalars=True, description=None):
    """Writes one layer's head-health record and its two scalars to the default summary writer.

    The TensorFlow twin of `AttentionWriter.health` (same record, same tags): `<tag>/health`
    holds `health_summary.to_record(result)` as a rank-0 string tensor (plugin "attention"), and
    `attention_health/<tag>/min_entropy` and `.../max_logit` go to the Scalars dashboard. Tags
    are written exactly as given (enclosing `tf.name_scope`s are NOT prepended): pass the tag
    the layer's attention steps are stored under.

    Args:
      tag: the layer's attention tag.
      result: `health.HeadHealth.result()` of that layer (or the `HeadHealth` itself).
      step: `int64` step; defaults to `tf.summary.experimental.get_step()`.
      scalars: also write the two scalars.
      description: optional description of the health tag.

    Returns:
      True when the record was written, False when no default writer is set or recording is off.

    Example:

    ```python
    writer = tf.summary.create_file_writer("logs/run1")
    with writer.as_default(step=100):
        tb_attention_plugin.summary.write_health("decoder/layer_0", health_result)
    ```
    """
    import tensorflow as tf  # lazily: the plugin loader imports this package without TF
    from tensorboard.plugins.scalar import metadata as scalar_metadata

    if hasattr(result, "result") and callable(result.result):
        result = result.result()
    record = health_summary.to_record(result)  # raises before anything is written
    written = tf.summary.write(
        tag=health_summary.health_tag(tag),
        tensor=tf.constant(health_summary.encode(record), dtype=tf.string),
        step=step,
        metadata=metadata.create_health_metadata(description),
    )
    if scalars:
        for name, value in health_summary.layer_scalars(result).items():
            scalar_tag = health_summary.scalar_tag(tag, name)
            tf.summary.write(
                tag=scalar_tag,
                tensor=tf.constant(value, dtype=tf.float32),
                step=step,
                metadata=scalar_metadata.create_summary_metadata(display_name=scalar_tag, description=""),
            )
    return bool(written) if tf.executing_eagerly() else written
