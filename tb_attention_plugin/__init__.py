"""tb-attention: attention heatmaps for TensorBoard.

Public API (imported lazily, so that TensorBoard's plugin loader stays light):

- `attention(name, weights, step=None, ...)`: the TensorFlow summary op.
- `AttentionWriter(logdir)`: the same summaries without TensorFlow (JAX, PyTorch, numpy).
- `AttentionLogger(log_dir="logs", probe=...)`: a Keras callback that logs every attention
  layer to `<log_dir>/train`.
- `register_attention(layer_class, probabilities)`: reads an attention layer the callback
  cannot find by itself, through a function that returns its probabilities.
- `AttentionLoggerWarning`: the warning it gives for what it could not log (importing it does
  not import Keras).

Example:

```python
import tb_attention_plugin as tba

model.fit(x, y, callbacks=[tba.AttentionLogger("logs", probe=x[:2])])
```
"""

import importlib

__version__ = "0.2.0"

_LAZY = {
    "attention": ("tb_attention_plugin.summary", "attention"),
    "AttentionWriter": ("tb_attention_plugin.writer", "AttentionWriter"),
    "AttentionLogger": ("tb_attention_plugin.logger.callback", "AttentionLogger"),
    "AttentionLoggerWarning": ("tb_attention_plugin.logger.problems", "AttentionLoggerWarning"),
    "induction_probe": ("tb_attention_plugin.health", "induction_probe"),
    "register_attention": ("tb_attention_plugin.logger.adapters.registered",
                           "register_attention"),
    "unregister_attention": ("tb_attention_plugin.logger.adapters.registered",
                             "unregister_attention"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError("module 'tb_attention_plugin' has no attribute %r" % name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
