"""Shared fixtures. The parity tests import torch (installed by `make test`)."""

import json
import pathlib

import pytest

from helpers.commands import TESTS_DIR
from helpers.configs import dataset_config
from helpers.trained_model import train_synthetic


def pytest_configure(config):
  """TFDS progress bars would flood the test logs."""
  del config
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()


@pytest.fixture(scope='session')
def torchvision_shapes() -> dict:
  """torchvision 0.28's resnet18-152 state_dict key names, shapes and parameter counts."""
  return json.loads((TESTS_DIR / 'torchvision_resnet_state_dict_shapes.json').read_text())


@pytest.fixture
def resnet_config():
  """The default config's model section, switched to the plain ResNet classifier."""
  from configs import default

  model = default.get_model_config()
  model.name = 'resnet'
  model.depth = 18
  return model


@pytest.fixture(scope='session')
def resnet18_pth(tmp_path_factory) -> pathlib.Path:
  """A randomised 10-class ResNet-18 twin saved as a plain torch state_dict."""
  import torch

  from clan_jax.pytorch.twin import ResNetClassifier
  from helpers.torch_helpers import randomize_

  path = tmp_path_factory.mktemp('torch') / 'resnet18_k10.pth'
  torch.save(randomize_(ResNetClassifier(18, 10), seed=11).state_dict(), path)
  return path


@pytest.fixture(scope='session')
def fake_cub(tmp_path_factory):
  """A fake CUB-200-2011 archive (with bad files) built once: (dataset config, summary)."""
  from clan_jax import datasets
  from helpers.fake_data import write_cub

  base = tmp_path_factory.mktemp('cub')
  write_cub(str(base / 'manual'))
  config = dataset_config(name='cub', manual_dir=str(base / 'manual'),
                          data_dir=str(base / 'data'), resize_size=72, crop_size=64)
  return config, datasets.prepare(config)


@pytest.fixture(scope='session')
def small_synthetic(tmp_path_factory):
  """A small synthetic dataset config (4 classes, 64 px), built on first use."""
  return dataset_config(
      name='synthetic', data_dir=str(tmp_path_factory.mktemp('synthetic')), resize_size=72,
      crop_size=64, **{'synthetic.num_classes': 4, 'synthetic.image_size': 64,
                       'synthetic.train_per_class': 6, 'synthetic.test_per_class': 3})


@pytest.fixture(scope='session')
def trained_synthetic_workdir(tmp_path_factory) -> pathlib.Path:
  """The workdir of a tiny CLAN-R18 trained once per session by main.py (TRAINED_SYNTHETIC_CONFIG:
  4 easy synthetic classes at 96 px, TRAINED_SYNTHETIC_STEPS steps, evaluated and checkpointed
  at TRAINED_SYNTHETIC_EVAL_STEPS; about 60 s of CPU time), good enough that the right class
  ranks first on the synthetic test images. Under pytest-xdist the workers share one run
  (the first trains, the others wait for it).

  Training wrote config.json, classes.json, checkpoints/<step>/ and eval_results.json in it;
  the config file is workdir/tiny_config.py (for `main.py --config=...`), the dataset is under
  workdir.parent/'data', and subprocesses should run with cli_environment(workdir.parent),
  which shares the compilation cache. Images of known classes: synthetic_test_image(workdir, i).
  Treat it as read-only: other tests use it too.
  """
  import os

  from filelock import FileLock

  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # The directory the session's workers share.
  base = root / 'trained_synthetic'
  with FileLock(str(root / 'trained_synthetic.lock')):
    if not (base / 'done').exists():
      train_synthetic(base)
  failure = (base / 'done').read_text()
  assert not failure, failure
  return base / 'workdir'
