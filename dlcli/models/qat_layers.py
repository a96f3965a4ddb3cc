"""Quantization-aware training layers for Keras 3 (``dlcli qat``).

``QatDense``, ``QatConv1D``, ``QatConv2D`` and ``QatDepthwiseConv2D`` are the Keras layers
with two fake-quantizers in their forward pass, as TFLite's int8 scheme will run them:
- the kernel: symmetric int8 over ``[-max|w|, max|w|]`` with a narrow range, per output
  channel for convolutions and per tensor for Dense (TFLite's FullyConnected transposes
  the kernel, and a per-channel axis does not survive it);
- the output (after the fused activation): asymmetric int8 over a range tracked while
  training, an exponential moving average of each batch's min / max (the first batch
  sets it). Inference uses the tracked range.

Gradients pass straight through the rounding (``tf.quantization.fake_quant_*``). The
tracked ranges are ordinary non-trainable weights: checkpoints, resume and
``model.keras`` carry them, and the TFLite converter reads them from the
``FakeQuantWithMinMaxVars`` ops as the int8 ranges of those tensors.
"""

from __future__ import annotations

import keras
from keras import ops
from keras.quantizers import fake_quant_with_min_max_vars

# the output ranges int8 TFLite fixes for these activations (scale 1/256 from 0, 1/128 around 0)
FIXED_OUTPUT_RANGES = {"softmax": (0.0, 255 / 256), "sigmoid": (0.0, 255 / 256), "tanh": (-1.0, 127 / 128)}


class _RangeMixin:
    """Tracked int8 ranges: ``_range_variables`` makes one, ``_fake_quant`` applies it."""

    def _range_variables(self, prefix: str):
        return tuple(self.add_weight(shape=(), initializer="zeros", trainable=False, name=f"{prefix}_{what}")
                     for what in ("min", "max", "batches"))

    def _fake_quant(self, x, lo_var, hi_var, batches, training):
        """``x`` through int8 fake quantization over its tracked range (updated when training:
        the first batch sets it, then a moving average of each batch's min and max)."""
        if training:
            first, d = ops.equal(batches, 0.0), self.ema_decay
            lo, hi = ops.cast(ops.min(x), "float32"), ops.cast(ops.max(x), "float32")
            lo_var.assign(ops.where(first, lo, d * lo_var + (1 - d) * lo))
            hi_var.assign(ops.where(first, hi, d * hi_var + (1 - d) * hi))
            batches.assign_add(1.0)
        lo = ops.minimum(lo_var, 0.0)  # int8 needs 0 inside the range
        hi = ops.maximum(hi_var, lo + 1e-6)
        return fake_quant_with_min_max_vars(x, lo, hi, num_bits=8, narrow_range=False)

    # Dense / Conv save only their kernel and bias (and quantization's variables) by name;
    # the generic Layer form stores every variable, the ranges included
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)


class _QatMixin(_RangeMixin):
    """Output range tracking and the kernel fake-quantizer; the subclass gives ``_linear``."""

    per_channel_kernel = True  # the class allows per-channel kernel scales

    def __init__(self, *args, ema_decay: float = 0.99, quantize_input: bool = False, per_channel: bool = True,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.ema_decay = float(ema_decay)
        self.quantize_input = bool(quantize_input)  # the model's input feeds it: its int8 range is learned too
        # per output channel where the layer allows it (Conv2D, DepthwiseConv2D) and asked;
        # False trains for an export with --int8-per-tensor
        self.per_channel = bool(per_channel) and self.per_channel_kernel

    def build(self, input_shape):
        super().build(input_shape)
        self.range_min, self.range_max, self.range_batches = self._range_variables("range")
        if self._separate_activation():  # int8 TFLite runs softmax / sigmoid / tanh on quantized logits
            self.logit_min, self.logit_max, self.logit_batches = self._range_variables("logit")
        if self.quantize_input:
            self.input_min, self.input_max, self.input_batches = self._range_variables("input")

    def _separate_activation(self) -> bool:
        return getattr(self.activation, "__name__", "linear") not in ("linear", "relu", "relu6")

    def quantized_kernel(self):
        k = self.kernel
        axes = list(range(len(k.shape) - 1)) if self.per_channel else None
        bound = ops.maximum(ops.max(ops.abs(k), axis=axes), 1e-8)
        return fake_quant_with_min_max_vars(k, -bound, bound, num_bits=8, narrow_range=True,
                                            axis=-1 if self.per_channel else None)

    def call(self, inputs, training=None):
        if self.quantize_input:
            inputs = self._fake_quant(inputs, self.input_min, self.input_max, self.input_batches, training)
        y = self._linear(inputs, self.quantized_kernel())
        if self._separate_activation():
            y = self._fake_quant(y, self.logit_min, self.logit_max, self.logit_batches, training)
        if self.activation is not None:
            y = self.activation(y)
        fixed = FIXED_OUTPUT_RANGES.get(getattr(self.activation, "__name__", ""))
        if fixed is not None:  # int8 TFLite gives these ops a fixed output scale, whatever the data
            return fake_quant_with_min_max_vars(y, fixed[0], fixed[1], num_bits=8, narrow_range=False)
        return self._fake_quant(y, self.range_min, self.range_max, self.range_batches, training)

    def _add_bias(self, y, channels):
        if not self.use_bias:
            return y
        return ops.add(y, ops.reshape(self.bias, (1,) * (len(y.shape) - 1) + (channels,)))

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay, "quantize_input": self.quantize_input,
                "per_channel": self.per_channel}


@keras.saving.register_keras_serializable(package="dlcli")
class QatDense(_QatMixin, keras.layers.Dense):
    per_channel_kernel = False

    def _linear(self, x, kernel):
        return self._add_bias(ops.matmul(x, kernel), self.units)


@keras.saving.register_keras_serializable(package="dlcli")
class QatConv1D(_QatMixin, keras.layers.Conv1D):
    per_channel_kernel = False  # TFLite runs it as an expanded Conv2D, and the channel axis does not survive that

    def _linear(self, x, kernel):
        return self._add_bias(self.convolution_op(x, kernel), self.filters)


@keras.saving.register_keras_serializable(package="dlcli")
class QatConv2D(_QatMixin, keras.layers.Conv2D):
    def _linear(self, x, kernel):
        return self._add_bias(self.convolution_op(x, kernel), self.filters)


@keras.saving.register_keras_serializable(package="dlcli")
class QatDepthwiseConv2D(_QatMixin, keras.layers.DepthwiseConv2D):
    def quantized_kernel(self):
        if not self.per_channel:
            return super().quantized_kernel()
        k = self.kernel  # (kh, kw, in, multiplier): TFLite's channels are in * multiplier
        shape = ops.shape(k)
        flat = ops.reshape(k, (shape[0], shape[1], 1, -1))
        bound = ops.maximum(ops.max(ops.abs(flat), axis=[0, 1, 2]), 1e-8)
        q = fake_quant_with_min_max_vars(flat, -bound, bound, num_bits=8, narrow_range=True, axis=-1)
        return ops.reshape(q, shape)

    def _linear(self, x, kernel):
        y = ops.depthwise_conv(x, kernel, strides=self.strides, padding=self.padding,
                               dilation_rate=self.dilation_rate, data_format=self.data_format)
        return self._add_bias(y, int(kernel.shape[-2]) * self.depth_multiplier)


@keras.saving.register_keras_serializable(package="dlcli")
class QatFolded(keras.layers.Layer):
    """Where a BatchNormalization or ReLU was folded into the quantized layer before it:
    passes its input through (and takes the call arguments the folded layer took)."""

    def call(self, inputs, **kwargs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


class _OutputQatMixin(_RangeMixin):
    """A layer that changes its input's range (average pooling, Add, Concatenate): its
    output fake-quantized over a tracked range, as int8 TFLite requantizes it."""

    def __init__(self, *args, ema_decay: float = 0.99, **kwargs):
        super().__init__(*args, **kwargs)
        self.ema_decay = float(ema_decay)

    def build(self, input_shape):
        super().build(input_shape)
        self.range_min, self.range_max, self.range_batches = self._range_variables("range")

    def call(self, inputs, training=None, **kwargs):
        y = super().call(inputs, **kwargs)
        return self._fake_quant(y, self.range_min, self.range_max, self.range_batches, training)

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay}


def _output_qat(base):
    cls = type(f"Qat{base.__name__}", (_OutputQatMixin, base), {"__module__": __name__})
    return keras.saving.register_keras_serializable(package="dlcli")(cls)


QAT_CLASSES = {"Dense": QatDense, "Conv1D": QatConv1D, "Conv2D": QatConv2D, "DepthwiseConv2D": QatDepthwiseConv2D}
OUTPUT_QAT_CLASSES = {base.__name__: _output_qat(base) for base in (
    keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D, keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D, keras.layers.Add, keras.layers.Concatenate)}
