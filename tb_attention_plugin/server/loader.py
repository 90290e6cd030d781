"""TensorBoard's entry point for the Attention tab (`tensorboard_plugins` entry point group).

Import-light on purpose: TensorBoard imports every entry point at startup and an import error
kills the whole `tensorboard` process, so numpy, the plugin and its helpers load in `load()`.

Example (what TensorBoard does):

```python
loader = AttentionLoader()
loader.fix_flags(flags)          # before the data readers are built
plugin = loader.load(context)    # an AttentionPlugin
```
"""

from tensorboard.plugins import base_plugin

PLUGIN_NAME = "attention"  # = metadata.PLUGIN_NAME, not imported to keep this module light

# How many steps per attention tag TensorBoard keeps (reservoir sampling keeps the newest and a
# uniform sample of older ones). TensorBoard's own default for blob sequences is 10, too few for
# a step slider over a training run. Both readers (the Rust data server and the Python reader)
# hold every retained step in memory, so this bounds memory: a 12-layer x 12-head model logging
# 2 examples at 128 tokens stores about 1.5-2 MB per step (u8 codes, zlib), so 100 steps are
# ~200 MB, and the callback's default cadence (every 100 optimizer steps) spans 10,000 steps
# with no sampling at all. `--samples_per_plugin=attention=N` overrides it (0 keeps all).
DEFAULT_SAMPLES = 100


class AttentionLoader(base_plugin.TBLoader):
    """Loads `AttentionPlugin` and sets its default sampling."""

    def fix_flags(self, flags):
        """Sets `samples_per_plugin["attention"]` unless the user gave one."""
        samples = getattr(flags, "samples_per_plugin", None)
        if samples is None:
            samples = {}
            flags.samples_per_plugin = samples
        if isinstance(samples, dict):
            samples.setdefault(PLUGIN_NAME, DEFAULT_SAMPLES)

    def load(self, context):
        from tb_attention_plugin.server.plugin import AttentionPlugin

        return AttentionPlugin(context)
