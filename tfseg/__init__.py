"""tfseg: learn to segment objects without labels (ReDO, PerturbGAN, Labels4Free) in TF2 / Keras 3."""

__version__ = "0.1.0"
