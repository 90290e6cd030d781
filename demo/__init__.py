"""Demos of tb-attention: translation, a Vision Transformer and the article's attention, fixed.

Run them as modules from the repository root, e.g. `python -m demo.run_all --logdir logs`.
"""
