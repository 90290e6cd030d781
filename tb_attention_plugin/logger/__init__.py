"""The Keras side of tb-attention: the `AttentionLogger` callback and what one capture needs.

Modules here may import Keras (and TensorFlow on its backend); `tb_attention_plugin.server`
never imports them. The public names are `tb_attention_plugin.AttentionLogger` and
`tb_attention_plugin.AttentionLoggerWarning`. One job per module:

- `callback.py`: `AttentionLogger`, the Keras hooks (when to capture) and the flow of one
  capture: capture -> view -> summaries -> write;
- `options.py`: the checked arguments, a frozen `Options`;
- `probe.py`: the probe batch cut to `max_examples`, its images and their patch layout;
- `capture.py`: finding attention layers and reading their scores in one forward pass;
- `tokens.py`: token strings for each axis, from lists or ids and a vocabulary;
- `budget.py`: the per-capture byte budget (each layer FULL or POOLED, size bound, note);
- `blocked.py`: a pooled layer's attention computed in query chunks and reduced as it goes;
- `chunk_feed.py`: those chunks handed to a numpy consumer (the health pass), also from a graph;
- `summaries.py`: the summary items of a capture and their per-head statistics;
- `health_pass.py`: the head-health measures over the health probe set (`health_probe=`);
- `writing.py`: the run directory's summary file writer;
- `distribution.py`: which process of a multi-process job runs the probe and writes;
- `problems.py`: `AttentionLoggerWarning`, one warning per cause.
"""
