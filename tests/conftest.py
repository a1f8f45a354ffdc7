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

  from clan_jax.pytorch.twin import ResNetClassifier
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


# A tiny CLAN trained once per session by main.py, shared by the tests of predict and
# visualize. Easy synthetic data (4 classes that differ in large details, no clutter, noise,
# rotation or flips) at 96 px, which XLA:CPU runs faster than 64 px (0.6 s against 3.1 s
# CPU time per train step of batch 16, measured): after 40 AdamW steps the fused top-1 on
# the 16 test images is 1.0 with a loss near 1e-8, so predictions have a wide margin.
TRAINED_SYNTHETIC_STEPS = 40
TRAINED_SYNTHETIC_EVAL_STEPS = (20, 40)  # Evaluated (hence 'best' candidates) and kept.
TRAINED_SYNTHETIC_CONFIG = '''
from configs import default


def get_config():
  config = default.get_config()
  config.model.update(depth=18, clca_dim=16, head_dim=16)
  config.dataset.update(name='synthetic', data_dir={data_dir!r}, resize_size=96, crop_size=96,
                        cache=True)
  config.dataset.augment.update(random_crop=False, flip=False)
  config.dataset.synthetic.update(
      num_classes=4, image_size=96, train_per_class=64, test_per_class=4, detail_scale=1.5,
      scale_range=(0.8, 0.8), max_rotation=0.0, flip=False, clutter=0, colour_jitter=0.0,
      noise=0.0)
  config.update(batch_size=16, num_train_steps={steps}, log_every_steps=20,
                eval_every_steps={eval_every}, checkpoint_every_steps=1000, keep_checkpoints=2)
  config.optimizer.update(name='adamw', learning_rate=2e-3, backbone_learning_rate=2e-3,
                          weight_decay=1e-4, warmup_epochs=0.5)
  config.visualize.num_images = 2
  return config
'''


def cli_environment(base: pathlib.Path) -> dict:
  """Subprocess environment: CPU, this checkout first, a compilation cache in base/jax_cache
  shared by the runs that use the same base."""
  import os

  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(REPO_ROOT),
          'JAX_COMPILATION_CACHE_DIR': str(base / 'jax_cache'),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1'}


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
      _train_synthetic(base)
  failure = (base / 'done').read_text()
  assert not failure, failure
  return base / 'workdir'


def _train_synthetic(base: pathlib.Path) -> None:
  """Trains into base/workdir; base/done holds '' on success, else the error."""
  import shutil
  import subprocess
  import sys

  shutil.rmtree(base, ignore_errors=True)
  workdir = base / 'workdir'
  workdir.mkdir(parents=True)
  config = workdir / 'tiny_config.py'
  config.write_text(TRAINED_SYNTHETIC_CONFIG.format(
      data_dir=str(base / 'data'), steps=TRAINED_SYNTHETIC_STEPS,
      eval_every=TRAINED_SYNTHETIC_EVAL_STEPS[0]))
  result = subprocess.run([sys.executable, 'main.py', f'--config={config}',
                           f'--workdir={workdir}'], cwd=REPO_ROOT, env=cli_environment(base),
                          capture_output=True, text=True, timeout=600)
  failure = '' if result.returncode == 0 else (
      f'training the synthetic model failed (exit {result.returncode}):\n{result.stderr[-4000:]}')
  (base / 'done').write_text(failure)


def synthetic_test_image(workdir: pathlib.Path, index: int):
  """(uint8 image (S, S, 3), label) of the index-th test example of the synthetic dataset a
  workdir was trained on (from its config.json): the very pixels its test split stores."""
  from clan_jax import datasets
  from clan_jax.datasets import synthetic_images

  config = json.loads((workdir / 'config.json').read_text())
  spec = datasets.spec_from_config(config['dataset']['synthetic'])
  return synthetic_images.render(spec, 'test', index)
