"""sepconv-conformance: a conformance suite for tf.nn.separable_conv2d."""

__version__ = "0.1.0"
