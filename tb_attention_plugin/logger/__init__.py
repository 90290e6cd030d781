"""The Keras side of tb-attention: the `AttentionLogger` callback and what it needs.

Modules here may import Keras (and TensorFlow on its backend); `tb_attention_plugin.server`
never imports them. The public names are `tb_attention_plugin.AttentionLogger` and
`tb_attention_plugin.AttentionLoggerWarning`; `callback.py` holds the Keras hooks, and each
other module one job of a capture (see docs/ARCHITECTURE.md).
"""
