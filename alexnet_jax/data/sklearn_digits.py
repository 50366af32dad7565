"""`sklearn_digits`: scikit-learn's bundled handwritten digits as a TFDS dataset.

Why this exists: the quickstart and the tests need a *real* image dataset that
builds with no network. `sklearn.datasets.load_digits()` ships inside the
scikit-learn wheel (1,797 greyscale 8x8 scans of the digits 0-9, from the UCI
"Optical Recognition of Handwritten Digits" set), so building this dataset
only reads a file that is already on disk and takes a few seconds.

The pixel scale in the source is 0..16; it is stretched to 0..255 (value * 255
// 16) so the images look like ordinary uint8 images to the pipeline. The
train/test split is fixed: stratified by class, 360 test images, random_state 0,
so every machine builds the same split.
"""

import logging

import numpy as np
import tensorflow_datasets as tfds

NUM_TEST = 360
SPLIT_SEED = 0


def load_split_arrays():
  """Returns {"train": (images, labels, ids), "test": ...} as numpy arrays.

  Images are uint8 [N, 8, 8, 1] on 0..255, labels int64 [N], ids the index of
  each image in `load_digits()`. Shared by the builder and by tests that want
  an independent reference.
  """
  from sklearn import datasets as sk_datasets  # Only needed to build.
  from sklearn import model_selection

  digits = sk_datasets.load_digits()
  images = (digits.images.astype(np.int64) * 255 // 16).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int64)
  index = np.arange(len(labels))
  train_idx, test_idx = model_selection.train_test_split(
      index, test_size=NUM_TEST, stratify=labels, random_state=SPLIT_SEED)
  # Keep the source order inside each split: the split is the only randomness.
  train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
  return {name: (images[idx], labels[idx], idx)
          for name, idx in (("train", train_idx), ("test", test_idx))}


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """Handwritten digits 0-9 (8x8 greyscale) from scikit-learn; no download."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: 1437 train / 360 test, stratified."}

  # Nothing is downloaded: one log line instead of TFDS's download banners.
  def _log_download_bytes(self):
    logging.info("Building %s in %s from scikit-learn's copy (no download).", self.name,
                 self.data_dir)

  def _log_download_done(self):
    pass

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
            "id": np.int64,  # Index in load_digits(): lets tests check coverage.
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        citation="""@misc{optical_recognition_of_handwritten_digits_80,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {{Optical Recognition of Handwritten Digits}},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  note = {DOI: https://doi.org/10.24432/C50P49}
}""",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    arrays = load_split_arrays()
    return {name: self._generate_examples(*arrays[name]) for name in arrays}

  def _generate_examples(self, images, labels, ids):
    for image, label, idx in zip(images, labels, ids):
      yield int(idx), {"image": image, "label": int(label), "id": int(idx)}
