"""The TensorBoard side of tb-attention: the plugin that serves the Attention tab.

Never imports keras or tensorflow (tests/test_import_rules.py enforces it), and this package's
`__init__` stays empty of imports: TensorBoard imports the entry point `server.loader` at startup,
which must load nothing heavy. Read docs/ARCHITECTURE.md for which module owns which step.

Example (what TensorBoard does with the entry point):

```python
from tb_attention_plugin.server.loader import AttentionLoader
plugin = AttentionLoader().load(context)   # server.plugin.AttentionPlugin
```
"""
