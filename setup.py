"""Packaging for tb-attention: the Python package, its frontend files and the plugin entry point."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent

setuptools.setup(
    name="tb-attention",
    version="0.2.0",
    description="Attention heatmaps for TensorBoard: per step, layer and head, with real tokens.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8")
    if (HERE / "README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # Every Python package under tb_attention_plugin/ (server/, logger/, ...). The frontend lives
    # at the repository root (frontend/) and is installed as the sub-package
    # tb_attention_plugin.frontend, with its lib/ and views/ folders, so an installed wheel
    # serves it.
    packages=setuptools.find_packages(include=["tb_attention_plugin", "tb_attention_plugin.*"])
    + ["tb_attention_plugin.frontend"],
    package_dir={"tb_attention_plugin.frontend": "frontend"},
    package_data={
        "tb_attention_plugin.frontend": [
            "*.js",
            "*.css",
            "*.html",
            "*.md",
            "lib/*.js",
            "lib/*.md",
            "ui/*.js",
            "ui/*.md",
            "views/*.js",
            "views/*.md",
        ]
    },
    # The plugin, the TensorFlow-free AttentionWriter and reading need only these: a JAX/TPU or
    # PyTorch user installs no TensorFlow. The summary op and the callback's extras below.
    install_requires=[
        "tensorboard>=2.16",
        "numpy>=1.23",
        "protobuf>=3.20",
    ],
    extras_require={
        # AttentionLogger on the TensorFlow backend and the tf.summary op.
        "tensorflow": ["tensorflow>=2.16", "keras>=3.0"],
        # AttentionLogger on Keras 3 with JAX or PyTorch (install the backend as usual).
        "keras": ["keras>=3.0"],
        # The main job's demos (scripts/demo.sh): TensorFlow, and keras-hub for the LoRA
        # fine-tuning demo of a Llama-style causal LM (its SentencePiece tokenizer comes with it).
        "demo": ["tensorflow>=2.16", "keras>=3.0", "keras-hub"],
        # What bench/run.py needs (the frontend part also Debian's Chromium): no test tools.
        "bench": ["tensorflow>=2.16", "keras>=3.0", "keras-hub", "playwright"],
        # What the test suite needs: both of the above and the test tools. pytest-xdist runs
        # the suite in two processes (scripts/test.sh): much of it waits on tensorboard
        # processes, Chromium and subprocesses, so one process leaves a core idle.
        "test": ["tensorflow>=2.16", "keras>=3.0", "pytest", "pytest-xdist", "hypothesis",
                 "playwright", "build", "keras-hub"],
    },
    entry_points={
        "tensorboard_plugins": [
            "attention = tb_attention_plugin.server.loader:AttentionLoader",
        ],
    },
    classifiers=[
        "Framework :: TensorFlow",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Visualization",
    ],
)
