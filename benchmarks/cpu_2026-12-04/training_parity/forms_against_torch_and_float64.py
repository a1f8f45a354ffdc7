"""float32 3-step training parity per bn_impl: JAX and torch each against float64 truth."""
import sys

import numpy as np, torch, jax
import test_training_parity as t
from helpers.torch_helpers import numpy_state_dict, randomize_
from clan_jax.pytorch.twin import create_torch_model

def truth(config):
  twin = randomize_(create_torch_model(config.model, t.NUM_CLASSES), seed=3).to(torch.float32)
  twin = twin.to(torch.float64)  # the float32 values in float64
  return t._torch_steps(config, twin, t._batches())

from clan_jax.models.fields import TODAYS_FORMS
for bn in sys.argv[1:]:
  over = dict(kv.split('=') for kv in bn.split(';')) if '=' in bn else {}
  config = t._config(**{**TODAYS_FORMS, **over})
  with torch.backends.mkldnn.flags(enabled=False):
    before, theirs, ours = t._run_both(config, torch.float32, jit=True)
    f64 = truth(config)
  stats = [k for k in theirs if k.endswith(('running_mean', 'running_var'))]
  params = [k for k in theirs if k not in stats]
  up = lambda a: np.concatenate([(a[k].astype(np.float64) - before[k]).ravel() for k in params])
  e, a, tr = up(theirs), up(ours), up(f64)
  rel = lambda x, y: np.linalg.norm(x - y) / np.linalg.norm(y)
  per = sorted(((np.linalg.norm((ours[k] - theirs[k]).astype(np.float64)) /
                 max(np.linalg.norm((theirs[k] - before[k]).astype(np.float64)), 1e-30)), k) for k in params)
  print(f'{bn}: jax vs torch {rel(a, e):.2e}, jax vs f64 {rel(a, tr):.2e}, torch vs f64 {rel(e, tr):.2e}; '
        f'worst tensors {[(f"{v:.1e}", k) for v, k in per[-4:]]}', flush=True)
