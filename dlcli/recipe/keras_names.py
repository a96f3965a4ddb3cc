"""Names of Keras layer classes and keras.applications models, for validation
without importing Keras. Generated from keras 3.15.1; tests/test_keras_names.py
checks that the installed Keras still has exactly these (regenerate with
``python -m dlcli.recipe.keras_names``)."""

KERAS_VERSION = '3.15.1'

KERAS_LAYERS = frozenset({
    'Activation', 'ActivityRegularization', 'AdaptiveAveragePooling1D',
    'AdaptiveAveragePooling2D', 'AdaptiveAveragePooling3D', 'AdaptiveMaxPooling1D',
    'AdaptiveMaxPooling2D', 'AdaptiveMaxPooling3D', 'Add', 'AdditiveAttention', 'AlphaDropout',
    'Attention', 'AugMix', 'AutoContrast', 'Average', 'AveragePooling1D', 'AveragePooling2D',
    'AveragePooling3D', 'AvgPool1D', 'AvgPool2D', 'AvgPool3D', 'BatchNormalization',
    'Bidirectional', 'CategoryEncoding', 'CenterCrop', 'Concatenate',
    'ContrastLimitedAdaptiveHistogramEqualization', 'Conv1D', 'Conv1DTranspose', 'Conv2D',
    'Conv2DTranspose', 'Conv3D', 'Conv3DTranspose', 'ConvLSTM1D', 'ConvLSTM2D', 'ConvLSTM3D',
    'Convolution1D', 'Convolution1DTranspose', 'Convolution2D', 'Convolution2DTranspose',
    'Convolution3D', 'Convolution3DTranspose', 'Cropping1D', 'Cropping2D', 'Cropping3D',
    'CutMix', 'Dense', 'DepthwiseConv1D', 'DepthwiseConv2D', 'Discretization', 'Dot',
    'Dropout', 'ELU', 'EinsumDense', 'Embedding', 'Equalization', 'Flatten', 'FlaxLayer',
    'GRU', 'GRUCell', 'GaussianDropout', 'GaussianNoise', 'GlobalAveragePooling1D',
    'GlobalAveragePooling2D', 'GlobalAveragePooling3D', 'GlobalAvgPool1D', 'GlobalAvgPool2D',
    'GlobalAvgPool3D', 'GlobalMaxPool1D', 'GlobalMaxPool2D', 'GlobalMaxPool3D',
    'GlobalMaxPooling1D', 'GlobalMaxPooling2D', 'GlobalMaxPooling3D', 'GroupNormalization',
    'GroupQueryAttention', 'HashedCrossing', 'Hashing', 'Identity', 'InputLayer',
    'IntegerLookup', 'JaxLayer', 'LSTM', 'LSTMCell', 'Lambda', 'Layer', 'LayerNormalization',
    'LeakyReLU', 'Masking', 'MaxNumBoundingBoxes', 'MaxPool1D', 'MaxPool2D', 'MaxPool3D',
    'MaxPooling1D', 'MaxPooling2D', 'MaxPooling3D', 'Maximum', 'MelSpectrogram', 'Minimum',
    'MixUp', 'MultiHeadAttention', 'Multiply', 'Normalization', 'PReLU', 'Permute', 'Pipeline',
    'RMSNormalization', 'RNN', 'RandAugment', 'RandomBrightness', 'RandomColorDegeneration',
    'RandomColorJitter', 'RandomContrast', 'RandomCrop', 'RandomElasticTransform',
    'RandomErasing', 'RandomFlip', 'RandomGaussianBlur', 'RandomGrayscale', 'RandomHue',
    'RandomInvert', 'RandomPerspective', 'RandomPosterization', 'RandomRotation',
    'RandomSaturation', 'RandomSharpness', 'RandomShear', 'RandomTranslation', 'RandomZoom',
    'ReLU', 'RepeatVector', 'Rescaling', 'Reshape', 'Resizing', 'ReversibleEmbedding',
    'STFTSpectrogram', 'SeparableConv1D', 'SeparableConv2D', 'SeparableConvolution1D',
    'SeparableConvolution2D', 'SimpleRNN', 'SimpleRNNCell', 'Softmax', 'Solarization',
    'SpatialDropout1D', 'SpatialDropout2D', 'SpatialDropout3D', 'SpectralNormalization',
    'StackedRNNCells', 'StringLookup', 'Subtract', 'TFSMLayer', 'TextVectorization',
    'TimeDistributed', 'TorchModuleWrapper', 'UnitNormalization', 'UpSampling1D',
    'UpSampling2D', 'UpSampling3D', 'Wrapper', 'ZeroPadding1D', 'ZeroPadding2D',
    'ZeroPadding3D',
})

KERAS_APPLICATIONS = frozenset({
    'ConvNeXtBase', 'ConvNeXtLarge', 'ConvNeXtSmall', 'ConvNeXtTiny', 'ConvNeXtXLarge',
    'DenseNet121', 'DenseNet169', 'DenseNet201', 'EfficientNetB0', 'EfficientNetB1',
    'EfficientNetB2', 'EfficientNetB3', 'EfficientNetB4', 'EfficientNetB5', 'EfficientNetB6',
    'EfficientNetB7', 'EfficientNetV2B0', 'EfficientNetV2B1', 'EfficientNetV2B2',
    'EfficientNetV2B3', 'EfficientNetV2L', 'EfficientNetV2M', 'EfficientNetV2S',
    'InceptionResNetV2', 'InceptionV3', 'MobileNet', 'MobileNetV2', 'MobileNetV3Large',
    'MobileNetV3Small', 'NASNetLarge', 'NASNetMobile', 'ResNet101', 'ResNet101V2', 'ResNet152',
    'ResNet152V2', 'ResNet50', 'ResNet50V2', 'VGG16', 'VGG19', 'Xception',
})


def _generate() -> str:  # pragma: no cover - maintenance helper
    import inspect

    import keras

    layers = sorted(
        n for n in dir(keras.layers)
        if inspect.isclass(getattr(keras.layers, n)) and issubclass(getattr(keras.layers, n), keras.layers.Layer)
    )
    apps = sorted(n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n)))
    return repr((keras.__version__, layers, apps))


if __name__ == "__main__":  # pragma: no cover
    print(_generate())
