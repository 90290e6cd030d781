"""Demos of tb-attention: translation, Vision Transformer and the article's function-style attention.

Run them as modules from the repository root, e.g. `python -m demo.run_all --logdir logs`.
"""
