"""The networks: AlexNet's variants, local response norm, the two-tower split, CPU kernels.

    from alexnet_jax import models
    model = models.create_model("paper", num_classes=1000)
    params = models.init_params(model, 224, jax.random.key(0))
    logits = model.apply({"params": params}, images_nhwc, train=False)
"""

from alexnet_jax.models.alexnet import ARCHITECTURES
from alexnet_jax.models.alexnet import AlexNet
from alexnet_jax.models.alexnet import Architecture
from alexnet_jax.models.alexnet import ConvSpec
from alexnet_jax.models.alexnet import DTYPES
from alexnet_jax.models.alexnet import OVERRIDES
from alexnet_jax.models.alexnet import VARIANTS
from alexnet_jax.models.alexnet import check_override
from alexnet_jax.models.alexnet import count_params
from alexnet_jax.models.alexnet import create_model
from alexnet_jax.models.alexnet import default_image_size
from alexnet_jax.models.alexnet import forward_macs
from alexnet_jax.models.alexnet import init_params
from alexnet_jax.models.layers import ACTIVATIONS
from alexnet_jax.models.layers import INITS
from alexnet_jax.models.layers import adaptive_avg_pool
from alexnet_jax.models.lrn import LocalResponseNorm
from alexnet_jax.models.lrn import local_response_norm
