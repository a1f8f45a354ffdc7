"""The optimiser: learning-rate groups, linear scaling, warm-up + cosine, decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clan_jax.train import optim
from configs import default


def _params():
  return {'backbone': {'conv1': {'kernel': jnp.ones((3, 3, 3, 4))},
                       'bn1': {'scale': jnp.ones(4), 'bias': jnp.zeros(4)}},
          'clca_layer2': {'query': {'kernel': jnp.ones((1, 1, 4, 2)), 'bias': jnp.zeros(2)}},
          'fc': {'kernel': jnp.ones((4, 5)), 'bias': jnp.zeros(5)}}


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_zero():
  schedule = optim.warmup_cosine(0.1, warmup_steps=10, total_steps=110)
  assert float(schedule(0)) == 0 and abs(float(schedule(5)) - 0.05) < 1e-7
  assert abs(float(schedule(10)) - 0.1) < 1e-7
  assert abs(float(schedule(60)) - 0.05) < 1e-7  # Half-way through the cosine.
  assert abs(float(schedule(110))) < 1e-7 and abs(float(schedule(500))) < 1e-7


def test_groups_backbone_and_new_layers_and_fc_by_class_count():
  groups = optim.parameter_groups(_params(), num_classes=5)
  assert groups['backbone']['conv1']['kernel'] == optim.BACKBONE
  assert groups['clca_layer2']['query']['bias'] == optim.NEW
  assert groups['fc']['kernel'] == optim.NEW
  assert optim.parameter_groups(_params(), num_classes=1000)['fc']['kernel'] == optim.BACKBONE


def test_sgd_is_torch_sgd_with_per_group_rates_and_linear_scaling():
  config = default.get_optimizer_config()
  config.update(learning_rate=0.02, backbone_learning_rate=0.002, warmup_epochs=0.0,
                weight_decay=0.1, momentum=0.9)
  params = _params()
  tx, _ = optim.create_optimizer(config, params, num_classes=5, batch_size=32,
                                 total_steps=1000, warmup_steps=0)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, state = tx.update(grads, tx.init(params), params)
  # Step 0 of the cosine: the full rate, x2 for batch 32 over the base 16; torch's SGD adds
  # weight_decay * p to the gradient first.
  expected = -0.04 * (1 + 0.1 * params['fc']['kernel'])
  np.testing.assert_allclose(updates['fc']['kernel'], expected, rtol=1e-6)
  expected = -0.004 * (1 + 0.1 * params['backbone']['bn1']['scale'])
  np.testing.assert_allclose(updates['backbone']['bn1']['scale'], expected, rtol=1e-6)
  updates, _ = tx.update(grads, state, params)  # Momentum: buf = 0.9 buf + g'.
  lr = 0.04 * 0.5 * (1 + np.cos(np.pi / 1000))
  np.testing.assert_allclose(updates['fc']['bias'], -lr * 1.9, rtol=1e-5)


def test_decay_mask_can_exempt_norms_and_biases():
  mask = optim.decay_mask(_params(), decay_norm_and_bias=False)
  assert mask['backbone']['conv1']['kernel'] and mask['fc']['kernel']
  assert not mask['backbone']['bn1']['scale'] and not mask['fc']['bias']
  assert all(jax.tree.leaves(optim.decay_mask(_params(), decay_norm_and_bias=True)))


def test_gradient_clipping_and_adamw():
  config = default.get_optimizer_config()
  config.update(grad_clip_norm=1.0, name='adamw', weight_decay=0.0)
  params = _params()
  tx, _ = optim.create_optimizer(config, params, num_classes=5, batch_size=16,
                                 total_steps=10, warmup_steps=0)
  grads = jax.tree.map(lambda p: 100 * jnp.ones_like(p), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step is lr * sign(g) whatever the clipping; the rate is the new layers'.
  np.testing.assert_allclose(updates['fc']['bias'], -config.learning_rate, rtol=1e-4)
  assert isinstance(tx, optax.GradientTransformation)
