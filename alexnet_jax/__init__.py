"""AlexNet in JAX/Flax: the 2012 network, torchvision's variant and the seed's half-width net."""

import os as _os

# gs:// (and s3://) paths go through fsspec (gcsfs, s3fs) rather than
# TensorFlow's own GCS client, which honours no emulator and no credentials but
# Google's: one path layer for every file the project reads or writes.
_os.environ.setdefault("EPATH_USE_TF", "false")
