"""The Keras side of tb-attention: the `AttentionLogger` callback and what one capture needs."""
