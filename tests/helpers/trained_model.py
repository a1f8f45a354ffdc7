"""The tiny CLAN trained once per test session (the `trained_synthetic_workdir` fixture of
conftest.py), shared by the tests of predict, visualize and the notebook."""

import json
import pathlib
import shutil
import subprocess
import sys

from clan_jax import datasets
from clan_jax.datasets import synthetic_images
from helpers.commands import REPO_ROOT, cli_environment

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


def train_synthetic(base: pathlib.Path) -> None:
  """Trains into base/workdir; base/done holds '' on success, else the error; the log (stderr)
  goes to base/train.log."""
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
  (base / 'train.log').write_text(result.stderr)
  failure = '' if result.returncode == 0 else (
      f'training the synthetic model failed (exit {result.returncode}):\n{result.stderr[-4000:]}')
  (base / 'done').write_text(failure)


def synthetic_test_image(workdir: pathlib.Path, index: int):
  """(uint8 image (S, S, 3), label) of the index-th test example of the synthetic dataset a
  workdir was trained on (from its config.json): the very pixels its test split stores."""
  config = json.loads((workdir / 'config.json').read_text())
  spec = datasets.spec_from_config(config['dataset']['synthetic'])
  return synthetic_images.render(spec, 'test', index)
