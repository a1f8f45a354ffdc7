"""float32 two_pass vs custom_vjp against float64 (two_pass): gradient error, relative."""
import sys, functools
import jax
jax.config.update('jax_enable_x64', True)
import jax.numpy as jnp, numpy as np, optax
from clan_jax.models import create_model, multi_head_loss
from clan_jax.models.fields import ModelConfig, TODAYS_FORMS
depth, size, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
images64 = jnp.asarray(rng.normal(size=(batch, size, size, 3)))
labels = jnp.asarray(rng.integers(0, 200, batch))
def model(bn):
  return create_model(ModelConfig(depth=depth, dtype='float32', **{**TODAYS_FORMS, 'bn_impl': bn}), 200)
v32 = jax.jit(functools.partial(model('two_pass').init, train=False))(jax.random.PRNGKey(0), images64[:1].astype(jnp.float32))
def run(m, dt):
  variables = jax.tree.map(lambda a: a.astype(dt), v32)
  def loss_fn(p):
    out, _ = m.apply({**variables, 'params': p}, images64.astype(dt), train=True, mutable=['batch_stats'])
    return multi_head_loss(out, labels, {'top': 1.0, 'mid': 1.0, 'concat': 1.0})[0]
  return jax.jit(jax.value_and_grad(loss_fn))(variables['params'])
l0, g0 = run(model('two_pass'), jnp.float64)
n0 = float(optax.tree.norm(g0))
for bn in ('two_pass', 'custom_vjp'):
  l, g = run(model(bn), jnp.float32)
  d = jax.tree.map(lambda a, b: a.astype(jnp.float64) - b, g, g0)
  per = sorted((float(optax.tree.norm(x)) / max(float(optax.tree.norm(y)), 1e-30), k) for k, x, y in
               zip([jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(d)], jax.tree.leaves(d), jax.tree.leaves(g0)))
  gn = float(optax.tree.norm(g))
  print(f'gnorm rel {abs(gn-n0)/n0:.1e} ', end='')
  print(f'{bn:11s} loss rel {abs(float(l)-float(l0))/abs(float(l0)):.1e} grad err rel {float(optax.tree.norm(d))/n0:.1e} '
        f'median leaf {per[len(per)//2][0]:.1e} worst {per[-1][0]:.1e} {per[-1][1]}', flush=True)
