"""A small Vision Transformer on synthetic shapes; TensorBoard draws its attention over the images.

Each 32x32 image holds one shape (square, disc, triangle or cross) in a random colour, size and
place on a noisy background; the model names the shape. `AttentionLogger` stores a few probe
images with the attention of every layer, so the Attention tab's overlay shows the class token's
attention leaving the background and settling on the object as training goes on.

Usage:

```
python -m demo.vision --logdir logs --run-name vision --epochs 10
tensorboard --logdir logs   # open the "Attention" tab
```
"""

import os
import pathlib

import keras
import numpy as np
from keras import ops

from demo import training

CLASSES = ("square", "disc", "triangle", "cross")
IMAGE_SIZE = 32
PATCH_SIZE = 4
GRID = (IMAGE_SIZE // PATCH_SIZE, IMAGE_SIZE // PATCH_SIZE)
PREFIX_TOKENS = 1  # the class token


def _shape_mask(kind, size):
    """A boolean `size x size` mask of one shape."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    centre = size / 2.0
    if kind == "square":
        return np.ones((size, size), bool)
    if kind == "disc":
        return (ys - centre) ** 2 + (xs - centre) ** 2 <= centre**2
    if kind == "triangle":  # apex at the top, base at the bottom
        return np.abs(xs - centre) <= ys / 2.0
    bar = max(2, size // 3)  # cross
    low, high = (size - bar) // 2, (size - bar) // 2 + bar
    return ((ys >= low) & (ys < high)) | ((xs >= low) & (xs < high))


def make_images(count, seed=0):
    """Generates `count` images with labels and object masks.

    Returns:
      `(images float32 [N, 32, 32, 3] in [0, 1], labels int32 [N], masks bool [N, 32, 32])`,
      `masks` marking the object's pixels.

    Example:

    ```python
    images, labels, masks = make_images(8, seed=1)
    CLASSES[labels[0]], masks[0].mean()  # the class and the object's area share
    ```
    """
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.45, (count, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    labels = rng.integers(0, len(CLASSES), count).astype("int32")
    masks = np.zeros((count, IMAGE_SIZE, IMAGE_SIZE), bool)
    for i, label in enumerate(labels):
        size = int(rng.integers(9, 15))
        top, left = rng.integers(0, IMAGE_SIZE - size + 1, 2)
        shape = _shape_mask(CLASSES[label], size)
        masks[i, top : top + size, left : left + size] = shape
        colour = rng.uniform(0.6, 1.0, 3)
        colour[rng.integers(0, 3)] = rng.uniform(0.0, 0.3)  # saturated, so colour says nothing
        images[i][masks[i]] = colour
    return images, labels, masks


def object_patches(mask):
    """Which patches of the `GRID` an object touches: bool `[rows * cols]`, row-major."""
    rows, cols = GRID
    touched = mask.reshape(rows, PATCH_SIZE, cols, PATCH_SIZE).any(axis=(1, 3))
    return touched.reshape(-1)


def class_token_focus(weights, masks):
    """How much more the class token attends to the object than the object's area would give.

    Args:
      weights: `[examples, heads, T, T]` self-attention of one ViT layer (`T = 1 + patches`).
      masks: Object pixel masks `[examples, 32, 32]`.

    Returns:
      `(ratio, attention_share, area_share)` averaged over examples: the share of the class
      token's (head-averaged) attention to patches that falls on patches the object touches,
      the share of patches the object touches, and their ratio.
    """
    row = np.asarray(weights, "float32").mean(axis=1)[:, 0, PREFIX_TOKENS:]
    row = np.nan_to_num(row)
    shares, areas = [], []
    for attention, mask in zip(row, masks):
        on_object = object_patches(mask)
        shares.append(attention[on_object].sum() / attention.sum())
        areas.append(on_object.mean())
    attention_share, area_share = float(np.mean(shares)), float(np.mean(areas))
    return attention_share / area_share, attention_share, area_share


@keras.saving.register_keras_serializable(package="tb_attention_demo")
class ClassTokenAndPosition(keras.layers.Layer):
    """Prepends a learned class token to the patch sequence and adds position embeddings."""

    def build(self, input_shape):
        length, width = input_shape[1], input_shape[2]
        self.class_token = self.add_weight(shape=(1, 1, width), initializer="zeros",
                                           name="class_token")
        self.positions = self.add_weight(
            shape=(1, length + 1, width),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="positions",
        )

    def call(self, patches):
        batch = ops.shape(patches)[0]
        class_token = ops.broadcast_to(self.class_token, (batch, 1, ops.shape(patches)[2]))
        return ops.concatenate([class_token, patches], axis=1) + self.positions


@keras.saving.register_keras_serializable(package="tb_attention_demo")
class ViTBlock(keras.layers.Layer):
    """Pre-norm Transformer block: self-attention over patches, then an MLP."""

    def __init__(self, width, heads, hidden, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads, self.hidden = width, heads, hidden
        self.norm_1 = keras.layers.LayerNormalization(epsilon=1e-6, name="norm_1")
        self.attention = keras.layers.MultiHeadAttention(heads, width // heads, name="attention")
        self.norm_2 = keras.layers.LayerNormalization(epsilon=1e-6, name="norm_2")
        self.mlp = keras.Sequential(
            [keras.layers.Dense(hidden, activation="gelu"), keras.layers.Dense(width)], name="mlp"
        )

    def build(self, x_shape):
        self.norm_1.build(x_shape)
        self.attention.build(x_shape, x_shape)
        self.norm_2.build(x_shape)
        self.mlp.build(x_shape)

    def call(self, x):
        normed = self.norm_1(x)
        x = x + self.attention(normed, normed)
        return x + self.mlp(self.norm_2(x))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads,
                "hidden": self.hidden}


def build_model(width=64, heads=4, layers=2, hidden=128):
    """ViT: 4x4 patches of a 32x32 image (an 8x8 grid) plus a class token, `layers` blocks."""
    images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    patches = keras.layers.Conv2D(width, PATCH_SIZE, strides=PATCH_SIZE, name="patch_embedding")(
        images
    )
    x = keras.layers.Reshape((GRID[0] * GRID[1], width), name="patches")(patches)
    x = ClassTokenAndPosition(name="class_token_and_position")(x)
    for i in range(layers):
        x = ViTBlock(width, heads, hidden, name="block_%d" % i)(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    logits = keras.layers.Dense(len(CLASSES), name="logits")(x[:, 0])
    return keras.Model(images, logits, name="vit")


SIZES = {
    "full": dict(train_size=6000, test_size=500, width=64, heads=4, layers=2, hidden=128,
                 batch_size=64, epochs=10),
    "small": dict(train_size=3000, test_size=300, width=64, heads=2, layers=1, hidden=128,
                  batch_size=64, epochs=9),
}


def train(logdir, run_name="vision", epochs=None, small=False, learning_rate=1e-3,
          probe_examples=4, seed=0, update_freq=50, verbose=2):
    """Trains the ViT and logs loss, accuracy and attention under `<logdir>/<run_name>`.

    The probe images are the first `probe_examples` test images; the run directory also gets
    `model.keras` and `result.json` (settings, test accuracy, training seconds).

    Returns the result dictionary.
    """
    settings = training.sized_settings(SIZES, small, epochs)
    keras.utils.set_random_seed(seed)
    train_images, train_labels, _ = make_images(settings["train_size"], seed)
    test_images, test_labels, _ = make_images(settings["test_size"], seed + 1)
    probe = test_images[:probe_examples]
    model = build_model(settings["width"], settings["heads"], settings["layers"],
                        settings["hidden"])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    run_dir = pathlib.Path(logdir) / run_name
    seconds = training.fit_logged(
        model,
        run_dir,
        train_images,
        train_labels,
        (test_images, test_labels),
        settings,
        verbose,
        probe=probe,
        images=probe,
        image_grid=GRID,
        prefix_tokens=PREFIX_TOKENS,
        update_freq=update_freq,
        max_examples=probe_examples,
    )
    history = model.history.history
    return training.write_result(run_dir, settings, learning_rate, seed, seconds, probe_examples,
                                 test_accuracy=float(history["val_accuracy"][-1]))


def parse_args(argv=None):
    return training.parse_args(argv, __doc__.split("\n")[0], "vision",
                               "test images whose attention is logged")


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return training.train_from_args(
        train, parse_args(argv), lambda result: ", test accuracy %.3f" % result["test_accuracy"]
    )


if __name__ == "__main__":
    main()
