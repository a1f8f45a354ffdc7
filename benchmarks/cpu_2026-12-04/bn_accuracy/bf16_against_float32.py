"""bf16 two_pass vs custom_vjp against float32: loss and gradient norm, relative."""
import sys, functools
import jax, jax.numpy as jnp, numpy as np, optax
from clan_jax.models import create_model, multi_head_loss
from clan_jax.models.fields import ModelConfig, TODAYS_FORMS
depth, size, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
images = jnp.asarray(rng.normal(size=(batch, size, size, 3)).astype(np.float32))
labels = jnp.asarray(rng.integers(0, 200, batch))
def model(dtype, bn):
  return create_model(ModelConfig(depth=depth, dtype=dtype, **{**TODAYS_FORMS, 'bn_impl': bn}), 200)
ref = model('float32', 'two_pass')
variables = jax.jit(functools.partial(ref.init, train=False))(jax.random.PRNGKey(0), images[:1])
def run(m):
  def loss_fn(p):
    out, _ = m.apply({**variables, 'params': p}, images, train=True, mutable=['batch_stats'])
    return multi_head_loss(out, labels, {'top': 1.0, 'mid': 1.0, 'concat': 1.0})[0]
  loss, g = jax.jit(jax.value_and_grad(loss_fn))(variables['params'])
  return float(loss), g
loss0, g0 = run(ref)
n0 = float(optax.tree.norm(g0))
for dtype in ('float32', 'bfloat16'):
  for bn in ('two_pass', 'custom_vjp'):
    loss, g = run(model(dtype, bn))
    diff = float(optax.tree.norm(jax.tree.map(lambda a, b: a.astype(jnp.float32) - b, g, g0)))
    print(f'{depth} {size} b{batch} {dtype:9s} {bn:11s} loss rel {abs(loss-loss0)/abs(loss0):.1e}'
          f'  gnorm rel {abs(float(optax.tree.norm(g))-n0)/n0:.1e}  grad err rel {diff/n0:.1e}', flush=True)
