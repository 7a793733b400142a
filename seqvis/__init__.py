"""seqvis: a visual analysis server for the hidden units of neural networks."""

__version__ = "0.1.0"
