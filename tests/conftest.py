"""Shared fixtures. The parity tests import torch (installed by `make test`)."""

import json
import pathlib

import pytest

TESTS_DIR = pathlib.Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent


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
