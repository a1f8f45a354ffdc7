"""Training parity: 3 JAX train steps equal 3 steps of the PyTorch twin under torch.optim.SGD
with the same recipe (momentum, weight decay, two rate groups, warm-up + cosine, label
smoothing), from the same randomised weights and batches, without augmentation.

float64 proves the algorithm. (A float32 comparison over 3 steps is not here yet: with
batch 4 at 64 px both frameworks' float32 updates drift 1e-2 to 1e-1 from float64 after
3 steps, so agreement to 1e-4 needs a better-conditioned setting; see the issue notes.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from clu import metrics

from clan_jax import optim, preprocess, train
from clan_jax.convert import flax_to_torch_arrays, torch_to_flax
from clan_jax.torch_reference import create_torch_model, create_torch_optimizer, multi_head_loss
from configs import default
from torch_helpers import assert_close_to_scale, numpy_state_dict, randomize_, to_nchw

NUM_CLASSES, IMAGE_SIZE, BATCH, STEPS, TOTAL, WARMUP = 5, 64, 4, 3, 10, 2


def _config(**model):
  config = default.get_config()
  config.model.update(depth=18, **model)
  # The recipe's rates, momentum and decay (CLAN_SPEC); label smoothing on.
  config.optimizer.update(label_smoothing=0.1)
  config.model.head_loss_weights.update(mid=0.5, concat=2.0)
  return config


def _batches():
  rng = np.random.default_rng(0)
  return [{'image': rng.integers(0, 256, (BATCH, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
           'label': rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)}
          for _ in range(STEPS)]


def _torch_steps(config, twin, batches):
  optimizer, scheduler = create_torch_optimizer(
      twin, config.optimizer, num_classes=NUM_CLASSES, batch_size=BATCH, total_steps=TOTAL,
      warmup_steps=WARMUP)
  twin.train()
  dtype = next(twin.parameters()).dtype
  for batch in batches:
    optimizer.zero_grad()
    outputs = twin(to_nchw(preprocess.normalize(batch['image'])).to(dtype))
    loss, _ = multi_head_loss(outputs, torch.from_numpy(batch['label'].astype(np.int64)),
                              config.model.head_loss_weights, config.optimizer.label_smoothing)
    loss.backward()
    optimizer.step()
    scheduler.step()
  return numpy_state_dict(twin)


def _jax_steps(config, model, variables, batches):
  tx, schedules = optim.create_optimizer(config.optimizer, variables['params'],
                                         num_classes=NUM_CLASSES, batch_size=BATCH,
                                         total_steps=TOTAL, warmup_steps=WARMUP)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                           batch_stats=variables['batch_stats'],
                           opt_state=tx.init(variables['params']))
  collection = metrics.Collection.create(
      **{name: metrics.Average.from_output(name) for name in train.metric_names(model)})
  for batch in batches:
    state, _ = train.train_step(model, tx, schedules, config, collection, state, batch)
  return flax_to_torch_arrays(state.variables)


def _compare(config, dtype, rtol):
  from clan_jax.models import create_model

  twin = randomize_(create_torch_model(config.model, NUM_CLASSES), seed=3).to(dtype)
  before = numpy_state_dict(twin)
  model = create_model(config.model, NUM_CLASSES)
  variables = torch_to_flax(before, model, image_size=IMAGE_SIZE)
  batches = _batches()
  theirs = _torch_steps(config, twin, batches)
  ours = _jax_steps(config, model, variables, batches)
  assert ours.keys() == theirs.keys()
  for key in theirs:  # Updates (after minus before), and the BN running statistics.
    assert_close_to_scale(theirs[key] - before[key], ours[key] - before[key], rtol, key)


@pytest.mark.parametrize('model', [{'clca_dim': 16, 'head_dim': 16},
                                   {'name': 'resnet'}])
def test_float64_three_steps_equal_torch_sgd(model):
  with jax.enable_x64(True):
    _compare(_config(**model), torch.float64, 1e-9)
