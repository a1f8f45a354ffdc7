"""The preflight: the splits against the official figures, the weights, the ImageNet check with a
rigged tiny ResNet-18 file (fixed-seed random weights whose fc bias favours chosen ImageNet
classes), the step timing, and `main.py --mode=preflight` end to end: passing on a small
synthetic dataset, failing on the fake CUB (clan_jax/train/preflight.py, train/imagenet_check.py,
perf/preflight.py, datasets/imagenet_groups.py)."""

import math
import subprocess
import sys
import types

import flax.linen as nn
import numpy as np
import pytest
from safetensors.numpy import save_file

from clan_jax.base.errors import CheckpointError, UserError
from clan_jax.datasets import imagenet_groups, preprocess
from clan_jax.datasets.input_pipeline import SplitData
from clan_jax.models.resnet import ResNetClassifier
from clan_jax.pytorch.conversion import abstract_variables, key_table, load_torch_checkpoint
from clan_jax.train import imagenet_check
from clan_jax.train import preflight as checks
from configs import default
from helpers.commands import REPO_ROOT, cli_environment
from helpers.configs import dataset_config
from helpers.fake_data import encode

NORMALIZE = preprocess.normalize  # Before any test patches it.
BIRDS = (7, 8, 9)  # rooster, hen, ostrich: in CUB's group.
NOT_BIRDS = (404, 405, 406)  # airliner, airship, altar.


def rigged_resnet18(path, favoured) -> str:
  """A torchvision-layout ImageNet ResNet-18 .safetensors (numpy only): fixed-seed random
  convolutions and fc, unit batch norms, and an fc bias that makes `favoured` win."""
  rng = np.random.default_rng(0)
  arrays = {}
  table = key_table(abstract_variables(ResNetClassifier(1000, depth=18)))
  for key, (_, _, shape) in table.items():
    if len(shape) > 1:
      arrays[key] = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
    elif key.endswith(('running_var', 'weight')):
      arrays[key] = np.ones(shape)
    else:
      arrays[key] = np.zeros(shape)
  arrays['fc.bias'][list(favoured)] = 10.0
  save_file({k: v.astype(np.float32) for k, v in arrays.items()}, str(path))
  return str(path)


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
  base = tmp_path_factory.mktemp('weights')
  birds = load_torch_checkpoint(rigged_resnet18(base / 'birds.safetensors', BIRDS))
  save_file({k: v for k, v in birds.items() if not k.startswith('fc.')},
            str(base / 'backbone.safetensors'))
  return {'birds': str(base / 'birds.safetensors'),
          'others': rigged_resnet18(base / 'others.safetensors', NOT_BIRDS),
          'backbone': str(base / 'backbone.safetensors')}


@pytest.fixture(scope='module')
def photos() -> SplitData:
  """Six PNGs of uniform noise (about ImageNet's spread once normalised), a split in memory."""
  rng = np.random.default_rng(0)
  encoded = [encode(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), 'png') for _ in range(6)]
  return SplitData('train', np.arange(6, dtype=np.int32), [f'c{i}' for i in range(6)],
                   encoded=np.asarray(encoded, dtype=object))


def config_for(torch_checkpoint: str = '', name: str = 'cub'):
  config = default.get_config()
  config.model.depth = 18
  config.dataset.name = name
  config.init.torch_checkpoint = torch_checkpoint
  config.preflight.num_images = 4
  return config


def split(name: str, examples: int, classes: int) -> SplitData:
  return SplitData(name, np.arange(examples, dtype=np.int32) % classes,
                   [str(c) for c in range(classes)])


# ------------------------------------------------------------------- splits and weights

def test_the_official_splits_compare_without_warnings():
  cub = dataset_config(name='cub')
  for name, examples in (('train', 5994), ('test', 5794)):
    section = checks.compare_split('train', split(name, examples, 200), cub)
    assert section.warnings == []
    assert f'{examples:,}' in section.lines[0] and section.lines[0].count(f'{examples:,}') == 2


@pytest.mark.parametrize('name, examples, classes, warning', [
    ('train', 5990, 200, 'not the official 5,994: skipped files'),
    ('train[:90%]', 5395, 200, 'is a slice: 5,395 of the official 5,994'),
    ('validation', 500, 200, 'is not an official split of CUB-200-2011'),
    ('test', 5794, 150, 'holds 150 classes, not the official 200'),
])
def test_differences_from_the_official_figures_warn(name, examples, classes, warning):
  section = checks.compare_split('eval', split(name, examples, classes), dataset_config(name='cub'))
  assert len(section.warnings) == 1 and warning in section.warnings[0]


def test_stock_tfds_builders_and_aircraft_levels_have_their_official_figures():
  birds = dataset_config(name='tfds', tfds_name='caltech_birds2011:0.1.1')
  assert checks.dataset_key(birds) == 'cub'
  assert checks.compare_split('train', split('train', 5994, 200), birds).warnings == []
  assert checks.dataset_key(dataset_config(name='tfds', tfds_name='oxford_flowers102')) is None
  families = dataset_config(name='aircraft', aircraft_label='family')
  assert checks.compare_split('train', split('trainval', 6667, 70), families).warnings == []
  assert 'official 70' in checks.compare_split('train', split('trainval', 6667, 100),
                                               families).warnings[0]
  assert checks.compare_split('train', split('train', 7, 3),
                              dataset_config(name='folder')).warnings == []


def test_the_weights_section_warns_when_a_real_dataset_has_no_imagenet_weights(weights):
  assert 'init.from_scratch=False' in checks.weights_section(config_for()).warnings[0]
  scratch = config_for()
  scratch.init.from_scratch = True
  assert checks.weights_section(scratch).warnings == []
  assert checks.weights_section(config_for(name='synthetic')).warnings == []
  present = checks.weights_section(config_for(weights['birds']))
  assert present.warnings == [] and weights['birds'] in present.lines[0]
  assert 'no such file' in checks.weights_section(config_for('/absent.pth')).warnings[0]


# --------------------------------------------------------------------- the ImageNet check

def test_sound_weights_and_pipeline_pass(weights, photos):
  check = imagenet_check.run_imagenet_check(config_for(weights['birds']), photos)
  assert (check.num_images, check.resize_size, check.image_size) == (4, 256, 224)
  assert check.group_fraction == 1.0 and check.problems == [] and check.warnings == []
  assert {name for name, _ in check.top1} <= {imagenet_groups.NAMES[i] for i in BIRDS}
  assert all(abs(m) < 1 and 0.5 < s < 1.5 for m, s in zip(check.channel_mean, check.channel_std))
  assert '100.0% have a bird among their ImageNet top-5' in check.section().text()


def test_weights_that_favour_other_classes_fail(weights, photos):
  check = imagenet_check.run_imagenet_check(config_for(weights['others']), photos)
  assert check.group_fraction == 0.0
  assert len(check.problems) == 1 and 'only 0% of 4 training images have a bird' in (
      check.problems[0])
  assert '!!! FAILED' in check.section().text()
  assert issubclass(checks.PreflightError, UserError)


@pytest.mark.parametrize('normalise, problem', [
    (lambda images: images.astype(np.float32), 'cannot give'),  # Not normalised.
    (lambda images: NORMALIZE(NORMALIZE(images)), 'nearly flat'),  # Twice.
])
def test_a_broken_normalisation_fails(weights, photos, monkeypatch, normalise, problem):
  monkeypatch.setattr(preprocess, 'normalize', normalise)
  check = imagenet_check.run_imagenet_check(config_for(weights['birds']), photos)
  # Whatever the share of birds (the rigged bias may win anyway), the statistics fail.
  assert any(problem in p for p in check.problems), check.problems


def test_other_datasets_list_the_most_frequent_classes(weights, photos):
  check = imagenet_check.run_imagenet_check(config_for(weights['birds'], 'synthetic'), photos)
  assert check.group is None and check.group_fraction is None and check.problems == []
  assert sum(share for _, share in check.top1) == 1.0
  assert 'most frequent top-1: ' in check.section().text()
  assert 'top-5' not in check.section().text()


def test_files_without_an_imagenet_fc_are_skipped(weights, photos):
  backbone = imagenet_check.run_imagenet_check(config_for(weights['backbone']), photos)
  assert 'has no fc' in backbone.skipped and backbone.problems == []
  assert 'no init.torch_checkpoint' in imagenet_check.run_imagenet_check(
      config_for(), photos).skipped
  whole = config_for(weights['birds'])
  whole.init.torch_backbone_only = False
  assert 'whole model' in imagenet_check.run_imagenet_check(whole, photos).skipped


def test_the_groups_are_imagenet_indices():
  assert len(imagenet_groups.NAMES) == 1000
  for group in imagenet_groups.GROUPS.values():
    assert group.indices and len(set(group.indices)) == len(group.indices)
    assert all(0 <= i < 1000 for i in group.indices)
  dogs = imagenet_groups.GROUPS['dogs'].indices
  assert imagenet_groups.NAMES[dogs[0]] == 'Chihuahua' and 'Mexican hairless' in (
      imagenet_groups.NAMES[dogs[-1]])
  assert imagenet_groups.NAMES[imagenet_groups.GROUPS['cub'].indices[-1]] == 'albatross'


# --------------------------------------------------------------------- timing, end to end

def test_on_a_cpu_the_steps_are_timed_at_a_small_batch_and_scaled():
  from clan_jax.perf import preflight

  assert preflight.timing_batch_size('cpu', 16, 1) == 2
  assert preflight.timing_batch_size('cpu', 16, 4) == 4
  assert preflight.timing_batch_size('cpu', 1, 1) == 1
  assert preflight.timing_batch_size('gpu', 16, 8) == 16
  timing = preflight.StepTiming('cpu', 'cpu', 1, 2, 16, 448, 60.0, 5.0, 3, 2**30, 'host', 1000)
  assert timing.projected_s == 1000 * 5.0 * 16 / 2
  text = timing.section().text()
  assert 'a small batch on the CPU; configured: 16' in text and '11 h 07 min' in text


class TinyModel(nn.Module):
  """A model's call signature at the least cost: a classifier of the mean colour."""

  @nn.compact
  def __call__(self, images, train: bool = False):
    del train
    return {'logits': nn.Dense(4)(images.mean(axis=(1, 2)))}


def test_initial_weights_that_fail_are_timed_as_random_and_reported(monkeypatch):
  from clan_jax.perf import preflight

  def refuse(run):
    raise CheckpointError('init.checkpoint=/x: does not fit')

  monkeypatch.setattr(preflight, 'initial_training_variables', refuse)
  config = config_for()
  config.dataset.crop_size = 32
  run = types.SimpleNamespace(config=config, model=TinyModel())
  variables, error = preflight._run_variables(run)  # pylint: disable=protected-access
  assert error == 'init.checkpoint=/x: does not fit'
  assert variables['params']['Dense_0']['kernel'].shape == (3, 4)
  timing = preflight.StepTiming('cpu', 'cpu', 1, 2, 2, 32, 1.0, 0.5, 1, 0, 'host', 10, error)
  assert '!!! FAILED: timed with random weights: the initial weights failed: init.checkpoint' in (
      timing.section().text())


def main_py(config_text: str, base, *flags):
  """`python main.py --mode=preflight` with the config `config_text`, in a CPU environment."""
  config = base / 'config.py'
  config.write_text(config_text)
  return subprocess.run([sys.executable, 'main.py', f'--config={config}',
                         f'--workdir={base / "run"}', '--mode=preflight', *flags],
                        cwd=REPO_ROOT, env=cli_environment(base), capture_output=True, text=True,
                        timeout=300)


CONFIG = '''
from configs import default


def get_config():
  config = default.get_config()
  config.model.update(name='resnet', depth=18)
  config.dataset.update(name='synthetic', data_dir={data_dir!r}, resize_size=40, crop_size=32)
  config.dataset.synthetic.update(num_classes=4, image_size=48, train_per_class=4,
                                  test_per_class=2)
  config.update(batch_size=8, num_train_steps=100)
  config.preflight.timing_steps = 1
  return config
'''


def test_main_preflight_end_to_end_on_the_synthetic_dataset(tmp_path):
  result = main_py(CONFIG.format(data_dir=str(tmp_path / 'data')), tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "no official figures for dataset.name='synthetic'" in out
  assert '  train train ' in out and '  eval  test ' in out
  assert 'weights: none: random' in out and 'ImageNet check: skipped: no init.torch' in out
  assert 'batch 2 (a small batch on the CPU; configured: 8), 32 px' in out
  assert 'projected training time: 100 steps x ' in out and 'x 8/2' in out
  assert not any((tmp_path / 'run').iterdir())  # Nothing written.


FAKE_CUB_CONFIG = '''
from configs import default


def get_config():
  config = default.get_config()
  config.model.depth = 18
  config.dataset.update(manual_dir={manual_dir!r}, data_dir={data_dir!r}, resize_size=72,
                        crop_size=64)
  config.init.torch_checkpoint = {weights!r}
  config.preflight.num_images = 4
  return config
'''


def test_main_preflight_reports_a_failed_check_then_exits_1(fake_cub, weights, tmp_path):
  dataset, _ = fake_cub
  result = main_py(FAKE_CUB_CONFIG.format(manual_dir=dataset.manual_dir, data_dir=dataset.data_dir,
                                          weights=weights['others']), tmp_path)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "data: dataset.name='cub' (CUB-200-2011)" in result.stdout
  assert 'not the official 5,994: skipped files' in result.stdout
  assert '!!! FAILED: only 0%' in result.stdout and 'step time: not measured' in result.stdout
  error = result.stderr.strip().splitlines()[-1]
  assert error.startswith('error: preflight failed: only 0% ') and 'channel order' in error
