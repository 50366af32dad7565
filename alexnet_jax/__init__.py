"""AlexNet in JAX/Flax: the 2012 network, torchvision's variant and the seed's half-width net."""
