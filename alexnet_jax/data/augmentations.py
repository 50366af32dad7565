"""The augmentations by name and their constants: one home for the host (TensorFlow,
`augment.py`) and device (JAX, `device_augment.py`) implementations, importable
without either, so config validation does not load a framework.
"""

AUGMENTATIONS = ("paper", "inception", "none")
EVAL_RESIZES = ("shorter_side", "stretch")

# The paper's PCA colour noise: eigen-decomposition of the covariance of
# ImageNet RGB pixels on [0, 1]; columns of the matrix are the eigenvectors
# (the values of fb.resnet.torch, which torchvision recipes and big_vision use).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

# RandomResizedCrop's aspect-ratio range (width / height), and how many
# windows it draws before falling back to a centre crop.
INCEPTION_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
INCEPTION_ATTEMPTS = 10
