"""The parity command line: per-output differences and its exit status."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clan_jax.pytorch.parity_check import Difference, compare
from helpers.commands import REPO_ROOT, cli_environment, run_cli


def _args(checkpoint, *extra):
  return ['-m', 'clan_jax.parity', f'--torch_checkpoint={checkpoint}',
          '--config=configs/default.py', '--config.model.name=resnet',
          '--config.model.depth=18', '--image_size=64', *extra]


def test_random_inputs_pass_and_a_tiny_tolerance_fails(resnet18_pth):
  result = run_cli(*_args(resnet18_pth))
  for name in ('logits', 'features/layer1', 'features/layer4'):
    assert name in result.stdout
  assert 'OK: every output within 0.0001' in result.stdout
  strict = run_cli(*_args(resnet18_pth, '--tolerance=1e-12'), check_returncode=1)
  assert 'FAILED' in strict.stdout


def test_images_are_preprocessed_and_a_broken_image_is_a_clear_error(tmp_path, resnet18_pth):
  rng = np.random.default_rng(0)
  paths = []
  for index, mode in enumerate(('RGB', 'L')):
    path = tmp_path / f'image{index}.jpg'
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), np.uint8)).convert(mode).save(path)
    paths.append(str(path))
  result = run_cli(*_args(resnet18_pth, '--resize_size=72', *paths))
  assert 'OK' in result.stdout and '(2, 10)' in result.stdout
  (tmp_path / 'broken.jpg').write_bytes(b'garbage')
  broken = run_cli(*_args(resnet18_pth, str(tmp_path / 'broken.jpg')), check_returncode=2)
  assert 'broken.jpg: cannot be decoded' in broken.stderr and 'Traceback' not in broken.stderr


def test_compare_reports_scale_and_relative_difference():
  reference = {'a': np.array([2.0, -4.0]), 'b': np.ones((2, 2))}
  candidate = {'a': np.array([2.0, -4.004]), 'b': np.ones((2, 2))}
  differences = {d.name: d for d in compare(reference, candidate)}
  assert differences['a'] == Difference('a', (2,), 4.0, differences['a'].max_abs_diff)
  assert abs(differences['a'].relative - 1e-3) < 1e-9
  assert differences['b'].relative == 0


def test_clan_checkpoint_compares_every_head_and_map(tmp_path):
  import torch

  from clan_jax.pytorch.twin import create_torch_model
  from configs import default
  from helpers.torch_helpers import randomize_

  config = default.get_model_config()
  config.update({'depth': 18, 'clca_dim': 32, 'head_dim': 16, 'clca_heads': 2})
  path = tmp_path / 'clan_r18.pth'
  torch.save(randomize_(create_torch_model(config, 7), 12).state_dict(), path)
  result = run_cli('-m', 'clan_jax.parity', f'--torch_checkpoint={path}',
                   '--config=configs/default.py', '--config.model.depth=18',
                   '--config.model.clca_dim=32', '--config.model.head_dim=16',
                   '--config.model.clca_heads=2', '--image_size=64', '--num_classes=7')
  for name in ('logits', 'heads/concat', 'heads/layer2', 'clsa/fused', 'clca/layer3'):
    assert name in result.stdout
  assert 'OK: every output' in result.stdout


def test_bad_sizes_are_one_error_line_before_any_model_runs(tmp_path):
  base = ('-m', 'clan_jax.parity', '--config=configs/demo.py',
          f'--torch_checkpoint={tmp_path / "absent.pth"}')
  for flags, expected in ((('--batch_size=0',), '--batch_size=0: 0 is not a positive integer'),
                          (('--image_size=64', '--resize_size=32'),
                           'at most --resize_size=32'),
                          (('--tolerance=-1',), 'not a non-negative number')):
    result = run_cli(*base, *flags, check_returncode=2)
    assert expected in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.xdist_group('trained_synthetic')
def test_a_trained_workdir_is_checked_against_the_twin(trained_synthetic_workdir):
  """--workdir: the run's config and best checkpoint, converted to the twin's layout."""
  env = cli_environment(trained_synthetic_workdir.parent)
  result = subprocess.run([sys.executable, '-m', 'clan_jax.parity',
                           f'--workdir={trained_synthetic_workdir}', '--checkpoint=best',
                           '--image_size=96', '--resize_size=96'], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'heads/concat' in result.stdout and 'OK: every output' in result.stdout
  both = run_cli('-m', 'clan_jax.parity', f'--workdir={trained_synthetic_workdir}',
                 '--torch_checkpoint=x.pth', check_returncode=2)
  assert 'not both' in both.stderr
