"""Shared fixtures. The parity tests import torch (installed by `make test`)."""

import json
import pathlib

import pytest

TESTS_DIR = pathlib.Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent


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


def run_cli(*args: str, check_returncode: int | None = 0):
  """Runs `python ARGS` from the repository root; returns the CompletedProcess."""
  import subprocess
  import sys

  result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
  if check_returncode is not None:
    assert result.returncode == check_returncode, (
        f'exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}')
  return result


@pytest.fixture(scope='session')
def resnet18_pth(tmp_path_factory) -> pathlib.Path:
  """A randomised 10-class ResNet-18 twin saved as a plain torch state_dict."""
  import torch

  from clan_jax.torch_reference import ResNetClassifier
  from torch_helpers import randomize_

  path = tmp_path_factory.mktemp('torch') / 'resnet18_k10.pth'
  torch.save(randomize_(ResNetClassifier(18, 10), seed=11).state_dict(), path)
  return path


def dataset_config(base=None, **overrides):
  """A copy of `base` (default: configs/default.py's dataset section) with overrides.

  Nested keys are written 'augment.flip'.
  """
  import copy

  from configs import default

  config = copy.deepcopy(base) if base is not None else default.get_dataset_config()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


@pytest.fixture(scope='session')
def fake_cub(tmp_path_factory):
  """A fake CUB-200-2011 archive (with bad files) built once: (dataset config, summary)."""
  from clan_jax import datasets
  from fake_data import write_cub

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


TINY_CLAN_CONFIG = '''
from configs import default


def get_config():
  config = default.get_config()
  config.model.update(depth=18, clca_dim=16, head_dim=16)
  config.dataset.update(name='synthetic', data_dir={data_dir!r}, resize_size=72, crop_size=64,
                        cache=True)
  config.dataset.synthetic.update(num_classes=4, image_size=64, train_per_class=8,
                                  test_per_class=3)
  config.update(batch_size=8, num_train_steps=4, log_every_steps=2, eval_every_steps=2,
                checkpoint_every_steps=2)
  config.optimizer.update(learning_rate=0.02, backbone_learning_rate=0.02, warmup_epochs=1.0)
  config.visualize.num_images = 2
  return config
'''


def cli_environment(base: pathlib.Path) -> dict:
  """Subprocess environment: CPU, this checkout first, a compilation cache shared by runs."""
  import os

  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(REPO_ROOT),
          'JAX_COMPILATION_CACHE_DIR': str(base / 'jax_cache'),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1'}


@pytest.fixture(scope='session')
def trained_synthetic_workdir(tmp_path_factory) -> pathlib.Path:
  """A workdir trained once by main.py: a tiny CLAN-R18 (64 px) on a 4-class synthetic dataset,
  4 steps, evaluated at steps 2 and 4 (with TensorBoard figures of 2 images); training wrote
  config.json, classes.json, checkpoints/ and eval_results.json. The config file it was
  trained with is workdir/tiny_config.py; runs of main.py on it should use
  cli_environment(workdir.parent), which shares its compilation cache."""
  import subprocess
  import sys

  base = tmp_path_factory.mktemp('trained_synthetic')
  workdir = base / 'workdir'
  workdir.mkdir()
  config = workdir / 'tiny_config.py'
  config.write_text(TINY_CLAN_CONFIG.format(data_dir=str(base / 'data')))
  result = subprocess.run([sys.executable, 'main.py', f'--config={config}',
                           f'--workdir={workdir}'], cwd=REPO_ROOT, env=cli_environment(base),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir
