"""Model definitions from the papers, as tf_keras functional models (LeNet-5 also in Keras 3)."""

from __future__ import annotations

from types import ModuleType

from tf_admm.compat import keras, tf


def lenet5(num_classes: int = 10, *, api: ModuleType = keras) -> keras.Model:
    """Caffe's LeNet-5 ("LeNet-5" in Han et al. 2015 and Ye et al. 2018).

    conv1 20@5x5, max-pool 2, conv2 50@5x5, max-pool 2, fc1 500 with ReLU, fc2 10 (logits):
    500 + 25,000 + 400,000 + 5,000 = 430,500 weights (plus 580 biases).

    Args:
      num_classes: outputs of fc2.
      api: the Keras to build it with: tf_keras (default) or Keras 3 (``import keras``, any
        backend); the layers and their names are the same.
    """
    inputs = api.Input((28, 28, 1), name="image")
    h = api.layers.Conv2D(20, 5, name="conv1")(inputs)
    h = api.layers.MaxPool2D(2, name="pool1")(h)
    h = api.layers.Conv2D(50, 5, name="conv2")(h)
    h = api.layers.MaxPool2D(2, name="pool2")(h)
    h = api.layers.Flatten(name="flatten")(h)
    h = api.layers.Dense(500, activation="relu", name="fc1")(h)
    outputs = api.layers.Dense(num_classes, name="fc2")(h)
    return api.Model(inputs, outputs, name="lenet5")


# ----------------------------------------------------------------------------------------------
# AlexNet (ImageNet) and VGG-16 (CIFAR-10)
# ----------------------------------------------------------------------------------------------


@keras.utils.register_keras_serializable(package="recipes")
class LocalResponseNormalization(keras.layers.Layer):
    """Caffe's across-channel local response normalization (LRN).

    ``x / (k + alpha / size * s)**beta``, ``s`` the sum of ``x**2`` over ``size`` neighbouring
    channels. Caffe divides ``alpha`` by the window ``size`` and
    ``tf.nn.local_response_normalization`` does not, so the layer does it. The defaults are
    AlexNet's (size 5, alpha 1e-4, beta 0.75, k 1).
    Converts to TFLite's LOCAL_RESPONSE_NORMALIZATION operator.
    """

    def __init__(
        self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, **kwargs
    ):
        super().__init__(**kwargs)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"Expected an odd window size >= 1; received: size={size!r}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def call(self, inputs):
        return tf.nn.local_response_normalization(
            inputs,
            depth_radius=self.size // 2,
            bias=self.k,
            alpha=self.alpha / self.size,
            beta=self.beta,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "alpha": self.alpha,
            "beta": self.beta,
            "k": self.k,
        }


def _check_width(width_multiplier: float) -> None:
    if (
        isinstance(width_multiplier, bool)
        or not isinstance(width_multiplier, (int, float))
        or not 0 < width_multiplier <= 16
    ):
        raise ValueError(
            f"Expected width_multiplier in (0, 16]; received: width_multiplier={width_multiplier!r}"
        )


def _width(units: int, width_multiplier: float, divisor: int = 1) -> int:
    """``units * width_multiplier`` rounded to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(round(units * width_multiplier / divisor)) * divisor)


def alexnet_min_image_size() -> int:
    """Smallest square input AlexNet's strides and pools leave a 1x1 map for (67 pixels)."""
    size = 1
    while _alexnet_final_size(size) < 1:
        size += 1
    return size


def _alexnet_final_size(size: int) -> int:
    size = (size - 11) // 4 + 1  # conv1: 11x11, stride 4, no padding
    for _ in range(3):  # pool1, pool2, pool5: 3x3, stride 2 (conv2..conv5 keep the size)
        size = (size - 3) // 2 + 1 if size >= 3 else 0
    return size


def alexnet(
    num_classes: int = 1000,
    *,
    input_shape: tuple[int, int, int] = (227, 227, 3),
    width_multiplier: float = 1.0,
    batch_norm: bool = False,
    groups: int = 2,
    dropout: float = 0.5,
) -> keras.Model:
    """Caffe's ``bvlc_alexnet``, the AlexNet that Han et al. 2015 and Zhang/Ye et al. 2018 prune.

    conv1 96@11x11/4, LRN, max-pool 3/2; conv2 256@5x5 (2 groups), LRN, max-pool 3/2; conv3
    384@3x3; conv4 384@3x3 (2 groups); conv5 256@3x3 (2 groups), max-pool 3/2; fc1 4096, fc2 4096
    (ReLU, dropout), fc3 ``num_classes`` (logits). At width 1 and 227x227x3 inputs with 1000
    classes: 34,848 + 307,200 + 884,736 + 663,552 + 442,368 + 37,748,736 + 16,777,216 +
    4,096,000 = 60,954,656 weights (plus 10,568 biases), the papers' 60.9M.

    Args:
      num_classes: outputs of fc3.
      input_shape: ``(height, width, channels)``; at least 67x67 (see
        :func:`alexnet_min_image_size`), for which the last feature map is 1x1.
      width_multiplier: scales every layer's filters and units (rounded to a multiple of
        ``groups``), e.g. 1/8 for a tiny model with the same layers for tests.
      batch_norm: batch normalization after every convolution (before ReLU) instead of LRN;
        the convolutions then have no bias.
      groups: filter groups of conv2, conv4 and conv5 (2 in Caffe, from the two GPUs; 1 for
        ungrouped convolutions with twice their weights).
      dropout: dropout rate after fc1 and fc2.

    Returns:
      An uncompiled functional model named ``alexnet``.

    Raises:
      ValueError: for a width multiplier outside (0, 16], a bad ``groups`` or too small inputs.
    """
    _check_width(width_multiplier)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"Expected groups to be an integer >= 1; received: groups={groups!r}")
    height, width = input_shape[0], input_shape[1]
    if min(_alexnet_final_size(height), _alexnet_final_size(width)) < 1:
        raise ValueError(
            f"Expected inputs of at least {alexnet_min_image_size()}x{alexnet_min_image_size()} "
            f"pixels; received: input_shape={tuple(input_shape)}"
        )
    layers = keras.layers

    def conv(h, filters, kernel, name, strides=1, padding="same", conv_groups=1):
        h = layers.Conv2D(
            _width(filters, width_multiplier, groups),
            kernel,
            strides=strides,
            padding=padding,
            groups=conv_groups,
            use_bias=not batch_norm,
            name=name,
        )(h)
        if batch_norm:
            h = layers.BatchNormalization(name=f"bn{name[-1]}")(h)
        return layers.ReLU(name=f"relu{name[-1]}")(h)

    def normalize(h, index):
        return h if batch_norm else LocalResponseNormalization(name=f"norm{index}")(h)

    inputs = keras.Input(tuple(input_shape), name="image")
    h = conv(inputs, 96, 11, "conv1", strides=4, padding="valid")
    h = layers.MaxPool2D(3, 2, name="pool1")(normalize(h, 1))
    h = conv(h, 256, 5, "conv2", conv_groups=groups)
    h = layers.MaxPool2D(3, 2, name="pool2")(normalize(h, 2))
    h = conv(h, 384, 3, "conv3")
    h = conv(h, 384, 3, "conv4", conv_groups=groups)
    h = conv(h, 256, 3, "conv5", conv_groups=groups)
    h = layers.MaxPool2D(3, 2, name="pool5")(h)
    h = layers.Flatten(name="flatten")(h)
    for index in (1, 2):
        h = layers.Dense(_width(4096, width_multiplier), activation="relu", name=f"fc{index}")(h)
        h = layers.Dropout(dropout, name=f"drop{index}")(h)
    outputs = layers.Dense(num_classes, name="fc3")(h)
    return keras.Model(inputs, outputs, name="alexnet")


# Filters of VGG-16's 13 convolutions, block by block (Simonyan & Zisserman 2015, config D).
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16(
    num_classes: int = 10,
    *,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    width_multiplier: float = 1.0,
    batch_norm: bool = True,
    fc_units: int = 512,
    dropout: float = 0.5,
) -> keras.Model:
    """VGG-16 for CIFAR-10: VGG's 13 3x3 convolutions, then a small fully connected head.

    conv1_1 .. conv5_3 (64, 64 | 128, 128 | 256 x3 | 512 x3 | 512 x3 filters, 3x3, same
    padding, ReLU, 2x2 max-pool after each block), flatten (512 features at 32x32), fc1 and fc2
    ``fc_units`` with ReLU and dropout, fc3 ``num_classes`` logits: the common CIFAR-10 variant
    of VGG-16 (ImageNet's VGG-16 has 4096-unit fc6/fc7 on 7x7x512 features instead). At width
    1: 14,710,464 convolution weights (as in ImageNet's VGG-16) + 262,144 + 262,144 + 5,120
    fully connected weights = 15,239,872.

    Args:
      num_classes: outputs of fc3.
      input_shape: ``(height, width, channels)``, at least 32x32 (five 2x2 pools).
      width_multiplier: scales every layer's filters and units, e.g. 1/16 for tests.
      batch_norm: batch normalization after every convolution (before ReLU), without
        convolution biases; CIFAR-10 VGG-16 trains poorly from scratch without it.
      fc_units: units of fc1 and fc2 before the width multiplier.
      dropout: dropout rate after fc1 and fc2.

    Returns:
      An uncompiled functional model named ``vgg16``.

    Raises:
      ValueError: for a width multiplier outside (0, 16] or inputs smaller than 32x32.
    """
    _check_width(width_multiplier)
    if min(input_shape[0], input_shape[1]) < 32:
        raise ValueError(
            f"Expected inputs of at least 32x32 pixels; received: input_shape={tuple(input_shape)}"
        )
    layers = keras.layers
    inputs = keras.Input(tuple(input_shape), name="image")
    h = inputs
    for block, filters in enumerate(VGG16_BLOCKS, start=1):
        for index, count in enumerate(filters, start=1):
            name = f"{block}_{index}"
            h = layers.Conv2D(
                _width(count, width_multiplier),
                3,
                padding="same",
                use_bias=not batch_norm,
                name=f"conv{name}",
            )(h)
            if batch_norm:
                h = layers.BatchNormalization(name=f"bn{name}")(h)
            h = layers.ReLU(name=f"relu{name}")(h)
        h = layers.MaxPool2D(2, name=f"pool{block}")(h)
    h = layers.Flatten(name="flatten")(h)
    for index in (1, 2):
        h = layers.Dense(_width(fc_units, width_multiplier), activation="relu", name=f"fc{index}")(
            h
        )
        h = layers.Dropout(dropout, name=f"drop{index}")(h)
    outputs = layers.Dense(num_classes, name="fc3")(h)
    return keras.Model(inputs, outputs, name="vgg16")


# ----------------------------------------------------------------------------------------------
# MobileNet-v2 style (Fashion-MNIST)
# ----------------------------------------------------------------------------------------------

# (expansion factor, output channels, stride) of each inverted residual block; a block whose
# stride is 1 and whose input has its output's channels ends in a residual Add.
MOBILENET_FASHION_BLOCKS = (
    (1, 16, 1),
    (6, 24, 2),
    (6, 24, 1),
    (6, 32, 1),
    (6, 32, 1),
)


def mobilenet_fashion(num_classes: int = 10, width_multiplier: float = 1.0) -> keras.Model:
    """A small MobileNet-v2 (Sandler et al. 2018) for 28x28x1 images.

    Stem 3x3 convolution with stride 2 (32 channels, 14x14), the inverted residual blocks of
    :data:`MOBILENET_FASHION_BLOCKS` (1x1 expansion, 3x3 depthwise, linear 1x1 projection,
    BatchNorm after each convolution, ReLU6; residual Adds where shapes allow: ``add3`` and
    ``add5``), a 1x1 head of 128 channels, global average pooling and a Dense classifier.
    Channel counts are scaled by ``width_multiplier`` (rounded to multiples of 4). Convolutions
    have no bias (their BatchNorm has one). At width 1: 2.4 M multiply-adds, 48,650 parameters.
    """
    _check_width(width_multiplier)
    layers = keras.layers

    def norm(h, label, relu=True):
        h = layers.BatchNormalization(name=f"bn_{label}")(h)
        return layers.ReLU(6.0, name=f"relu_{label}")(h) if relu else h

    inputs = keras.Input((28, 28, 1), name="image")
    h = layers.Conv2D(
        _width(32, width_multiplier, 4), 3, strides=2, padding="same", use_bias=False, name="stem"
    )(inputs)
    h = norm(h, "stem")
    for index, (expansion, channels, stride) in enumerate(MOBILENET_FASHION_BLOCKS, start=1):
        x = h
        channels = _width(channels, width_multiplier, 4)
        if expansion > 1:
            h = layers.Conv2D(
                int(x.shape[-1]) * expansion, 1, use_bias=False, name=f"expand{index}"
            )(h)
            h = norm(h, f"expand{index}")
        h = layers.DepthwiseConv2D(
            3, strides=stride, padding="same", use_bias=False, name=f"depthwise{index}"
        )(h)
        h = norm(h, f"depthwise{index}")
        h = layers.Conv2D(channels, 1, use_bias=False, name=f"project{index}")(h)
        h = norm(h, f"project{index}", relu=False)
        if stride == 1 and int(x.shape[-1]) == channels:
            h = layers.Add(name=f"add{index}")([x, h])
    h = layers.Conv2D(_width(128, width_multiplier, 4), 1, use_bias=False, name="head")(h)
    h = norm(h, "head")
    h = layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = layers.Dense(num_classes, name="classifier")(h)
    return keras.Model(inputs, outputs, name="mobilenet_fashion")
