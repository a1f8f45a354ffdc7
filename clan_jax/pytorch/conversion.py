"""PyTorch <-> Flax weight conversion, strict and safe (the command: clan_jax/convert.py).

The mapping is a table of name rules, not a hand-written list of keys: a Flax leaf
(collection, module path, leaf name) becomes a torch key by renaming each module-path
component (`layer2_0` -> `layer2.0`, ...) and the leaf (`kernel` -> `weight`, ...);
layouts change by the array's rank (conv OIHW <-> HWIO, linear transposed). The
expected keys come from the model itself (jax.eval_shape of its init), so every
mismatch is found and reported at once.

Importing this module pulls in no torch, TensorFlow, TFDS, clu or ml_collections;
`.pth` files need torch, `.safetensors` files do not.
"""

import functools
import importlib
import os
import pickle
import re
from typing import Any, Iterable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import SafetensorError, safe_open

from clan_jax.base import files
from clan_jax.base.errors import CheckpointError, UserError
from clan_jax.config.validation import missing_weights_message

# Flax module-name component -> torch key fragment ('' drops the component).
MODULE_NAME_RULES = (
    (re.compile(r'^backbone$'), ''),
    (re.compile(r'^(layer\d)_(\d+)$'), r'\1.\2'),
    (re.compile(r'^downsample_conv$'), 'downsample.0'),
    (re.compile(r'^downsample_bn$'), 'downsample.1'),
    (re.compile(r'^(clca|clsa|heads)_(.+)$'), r'\1.\2'),
)
# (collection, Flax leaf name) -> torch parameter or buffer name.
LEAF_NAMES = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
COLLECTIONS = ('params', 'batch_stats')
BACKBONE_PREFIXES = ('conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4')
# Torch wrappers around a state_dict, unwrapped in this order.
STATE_DICT_WRAPPERS = ('state_dict', 'model_state_dict', 'model', 'module')
# A key prefix of a model held as `self.model` (PyTorch Lightning, many training scripts):
# removed when every key has it.
WRAPPER_KEY_PREFIX = 'model.'
# Layouts that are not torchvision's, recognised by a key, so that the error says what the
# file is. timm's plain ResNets (resnet50.tv_in1k, resnet50.a1_in1k, ...) use torchvision's
# names; its deep-stem variants (resnet50d, ...) do not (timm/models/resnet.py in
# huggingface/pytorch-image-models: `self.conv1 = nn.Sequential(...)` for stem_type 'deep').
FOREIGN_LAYOUTS = (
    (re.compile(r'^conv1\.\d+\.'),
     "a timm ResNet with a deep stem (resnet50d, resnet50c, ...: conv1.0, conv1.1, ...), another "
     "architecture: use a plain ResNet's weights, e.g. timm's resnet50.tv_in1k or torchvision's"),
    (re.compile(r'^(resnet\.)?embedder\.'),
     'a Hugging Face transformers ResNet (resnet.embedder..., e.g. microsoft/resnet-50), whose '
     "names differ: use torchvision's file, or timm's (e.g. timm/resnet50.tv_in1k)"),
)
MAX_KEYS_LISTED = 20  # Per kind of mismatch: a foreign file would list hundreds.
# Globals that can run code: never allowed, even on request.
FORBIDDEN_GLOBAL_MODULES = frozenset({
    'os', 'posix', 'nt', 'subprocess', 'sys', 'shutil', 'socket', 'builtins', '__builtin__',
    'importlib', 'runpy', 'pickle', 'marshal', 'code', 'codeop', 'ctypes', 'pty',
    'multiprocessing', 'webbrowser', 'io', 'pathlib', 'tempfile', 'types', 'functools',
    'operator', 'signal', 'threading'})


# ----------------------------------------------------------------------------- names

def torch_key(collection: str, path: tuple[str, ...]) -> str:
  """('params', ('backbone', 'layer2_0', 'downsample_bn', 'scale')) -> 'layer2.0.downsample.1.weight'."""
  parts = []
  for component in path[:-1]:
    for pattern, replacement in MODULE_NAME_RULES:
      if pattern.match(component):
        component = pattern.sub(replacement, component)
        break
    if component:
      parts.append(component)
  leaf = LEAF_NAMES.get((collection, path[-1]))
  if leaf is None:
    raise ValueError(f'no torch name for the Flax variable {collection}/{"/".join(path)}.')
  return '.'.join(parts + [leaf])


def to_torch_layout(array: np.ndarray) -> np.ndarray:
  """Flax layout -> torch layout: conv HWIO -> OIHW, linear (in, out) -> (out, in)."""
  if array.ndim == 4:
    return np.transpose(array, (3, 2, 0, 1))
  if array.ndim == 2:
    return np.transpose(array)
  return array


def to_flax_layout(array: np.ndarray) -> np.ndarray:
  """Torch layout -> Flax layout: conv OIHW -> HWIO, linear (out, in) -> (in, out)."""
  if array.ndim == 4:
    return np.transpose(array, (2, 3, 1, 0))
  if array.ndim == 2:
    return np.transpose(array)
  return array


def torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  return to_torch_layout(np.empty(flax_shape, np.int8)).shape


def key_table(variables: Mapping[str, Any]) -> dict[str, tuple[str, tuple[str, ...], tuple]]:
  """torch key -> (collection, Flax path, torch shape) for every leaf of a variables tree."""
  table = {}
  for collection in COLLECTIONS:
    for path, leaf in traverse_util.flatten_dict(dict(variables.get(collection, {}))).items():
      table[torch_key(collection, path)] = (collection, path, torch_shape(tuple(leaf.shape)))
  return table


def abstract_variables(model: nn.Module, image_size: int = 224) -> dict:
  """The model's variables as shapes only (no compute, no memory)."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), images)


# ------------------------------------------------------------------ reading checkpoints

def load_torch_checkpoint(path: str | os.PathLike,
                          allowed_globals: Iterable[str] = ()) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint into a flat {key: float32 numpy array} dict.

  `.safetensors` files are read without torch (bfloat16 upcast). Anything else goes
  through `torch.load(weights_only=True)`, which refuses pickles that would run code.
  A benign global that it refuses (e.g. 'argparse.Namespace' in a training
  checkpoint) is named in the error; pass it in `allowed_globals` if you trust the file.
  Wrappers ({'state_dict': ...}, {'model': ...}), DataParallel's 'module.' prefix and a
  'model.' prefix on every key are removed; `num_batches_tracked` counters are dropped.
  torchvision's ImageNet files (IMAGENET1K_V1 and V2) and timm's plain ResNets (.safetensors
  from the Hugging Face hub) share one key layout and load alike.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CheckpointError(missing_weights_message(path))
  if path.endswith('.safetensors'):
    tensors = _read_safetensors(path)
  else:
    _check_torch_save_format(path)
    tensors = _to_numpy_dict(_unwrap(_torch_load(path, allowed_globals), path))
  return _strip_module_prefix(tensors)


# torch.save writes a zip archive; before torch 1.6, a pickle (protocol 2: '\x80\x02...').
TORCH_SAVE_MAGIC = (b'PK', b'\x80')


def _check_torch_save_format(path: str) -> None:
  """Refuses a file that torch.save cannot have written (e.g. an HTML error page saved by a
  failed download), which torch.load would misreport as refused for safety."""
  with open(path, 'rb') as f:
    head = f.read(16)
  if not head:
    raise CheckpointError(f'{path}: the file is empty; download it again.')
  if not head.startswith(TORCH_SAVE_MAGIC):
    raise CheckpointError(f'{path}: not a PyTorch checkpoint: it begins with {head!r}, and '
                          'torch.save writes a zip archive. A failed download (an HTML page) '
                          'looks like this: download it again.')


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  try:
    with safe_open(path, framework='flax') as f:  # 'flax' reads bfloat16; 'numpy' can't.
      return {key: np.asarray(f.get_tensor(key), np.float32) for key in f.keys()
              if not key.endswith('num_batches_tracked')}
  except (SafetensorError, OSError) as e:
    raise CheckpointError(f'{path}: not a readable safetensors file ({e}).') from e


def _import_torch():
  try:
    import torch  # Late: torch is an optional extra.
  except ImportError as e:
    raise UserError(
        'reading a .pth checkpoint needs PyTorch: in the clan-jax folder, pip install -c '
        'constraints.txt -e ".[torch]" (the README shows a CPU-only torch), or use a '
        '.safetensors file (docs/TROUBLESHOOTING.md: ImageNet weights without torch).') from e
  return torch


def _resolve_global(name: str):
  module_name, _, attribute = name.rpartition('.')
  if not module_name:
    raise UserError(f'allowed global {name!r} must be a dotted name like argparse.Namespace.')
  if module_name.split('.')[0] in FORBIDDEN_GLOBAL_MODULES:
    raise UserError(f'refusing to allow {name}: it can run code when the file is loaded.')
  try:
    obj = importlib.import_module(module_name)
    for part in attribute.split('.'):
      obj = getattr(obj, part)
  except (ImportError, AttributeError) as e:
    raise UserError(f'allowed global {name!r} cannot be imported ({e}).') from e
  return obj


def _torch_load(path: str, allowed_globals: Iterable[str]):
  torch = _import_torch()
  allowed = list(allowed_globals)
  objects = [_resolve_global(name) for name in allowed]
  try:
    with torch.serialization.safe_globals(objects):
      return torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    raise CheckpointError(_refusal_message(torch, path, allowed, e)) from None
  except Exception as e:  # Bytes that are no checkpoint raise many types (KeyError, EOFError...).
    reason = f'{type(e).__name__}: {e}' if str(e).strip() else type(e).__name__
    raise CheckpointError(f'{path}: not a readable PyTorch checkpoint ({reason}); expected a '
                          'complete file written by torch.save.') from None


def _refusal_message(torch, path: str, allowed: list[str], error: Exception) -> str:
  try:
    refused = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)
               if g not in allowed]
  except Exception:  # The scan itself failed: fall back to torch's own words.
    refused = []
  dangerous = [g for g in refused if g.split('.')[0] in FORBIDDEN_GLOBAL_MODULES]
  if dangerous:
    return (f'{path}: refused. The file references {", ".join(dangerous)}, which would run '
            'code when loaded; it is not a plain checkpoint and was not loaded.')
  if refused:
    return (f'{path}: torch.load(weights_only=True) refuses the Python objects '
            f'{", ".join(refused)} in this file. If you trust the file, allow them: '
            f'--allow_global={",".join(refused)} (load_torch_checkpoint(path, '
            f'allowed_globals={refused!r})). A pickled whole model also lands here: save '
            'model.state_dict() instead.')
  return f'{path}: refused by torch.load(weights_only=True): {error}'


def _is_tensor(value) -> bool:
  return hasattr(value, 'detach') and hasattr(value, 'dtype')


def _unwrap(obj, path: str) -> Mapping[str, Any]:
  while isinstance(obj, Mapping) and not any(_is_tensor(v) for v in obj.values()):
    inner = next((obj[k] for k in STATE_DICT_WRAPPERS if isinstance(obj.get(k), Mapping)), None)
    if inner is None:
      break
    obj = inner
  if not isinstance(obj, Mapping) or not any(_is_tensor(v) for v in obj.values()):
    found = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f'{path}: no state_dict of tensors found (found: {found}); expected '
                          "a state_dict, or a dict holding one under 'state_dict' or 'model'.")
  return obj


def _to_numpy_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  arrays = {}
  for key, value in state_dict.items():
    if not _is_tensor(value) or key.endswith('num_batches_tracked'):
      continue
    arrays[key] = tensor_to_numpy(value, np.float32)
  return arrays


def tensor_to_numpy(value, dtype=None) -> np.ndarray:
  """A torch tensor or array-like -> numpy (torch bfloat16 upcast first: .numpy() fails on it)."""
  if _is_tensor(value):
    value = value.detach().cpu()
    if not value.dtype.is_floating_point or value.dtype.itemsize < 4:
      value = value.float()
    value = value.numpy()
  array = np.asarray(value)
  return array.astype(dtype) if dtype is not None else array


def _strip_module_prefix(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """DataParallel's 'module.' (per key, as before), then a 'model.' that every key has."""
  arrays = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in arrays.items()}
  while arrays and all(k.startswith(WRAPPER_KEY_PREFIX) for k in arrays):
    arrays = {k[len(WRAPPER_KEY_PREFIX):]: v for k, v in arrays.items()}
  return arrays


# ------------------------------------------------------------------------- converting

def torch_to_flax(state_dict: Mapping[str, Any], model: nn.Module, *, image_size: int = 224,
                  backbone_only: bool = False, rng: Optional[jax.Array] = None) -> dict:
  """A torch state_dict -> the model's {'params', 'batch_stats'}.

  Strict: raises one CheckpointError listing every missing, unexpected and wrong-shape
  key. With `backbone_only=True` only the backbone (conv1, bn1, layer1..layer4) is read,
  other keys of the file (e.g. ImageNet's fc) are ignored, and every other variable is
  initialised from `rng` (the classifier for the model's K classes). Arrays keep their
  dtype (float64 stays float64 under jax.enable_x64).
  """
  arrays = {k: v for k, v in _strip_module_prefix(
      {k: tensor_to_numpy(v) for k, v in state_dict.items()}).items()
            if not k.endswith('num_batches_tracked')}
  table = key_table(abstract_variables(model, image_size))
  file_keys = list(arrays)
  if backbone_only:
    table = {k: v for k, v in table.items() if _is_backbone_key(k)}
    arrays = {k: v for k, v in arrays.items() if _is_backbone_key(k)}
  _check_keys(arrays, table, model, backbone_only, file_keys)
  if backbone_only:
    init_rng = jax.random.PRNGKey(0) if rng is None else rng
    images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    # Compiled once: run op by op, a ResNet-18's init took 39 s on a loaded 2-core CPU.
    init = jax.jit(functools.partial(model.init, train=False))
    variables = jax.tree.map(np.asarray, init(init_rng, images))
    flat = {c: traverse_util.flatten_dict(dict(variables.get(c, {}))) for c in COLLECTIONS}
  else:
    flat = {c: {} for c in COLLECTIONS}
  for key, (collection, path, _) in table.items():
    flat[collection][path] = to_flax_layout(arrays[key])
  return {c: jax.tree.map(jnp.asarray, traverse_util.unflatten_dict(flat[c]))
          for c in COLLECTIONS if flat[c]}


def _is_backbone_key(key: str) -> bool:
  return key.split('.')[0] in BACKBONE_PREFIXES


def _check_keys(arrays: Mapping[str, np.ndarray], table: Mapping[str, tuple], model: nn.Module,
                backbone_only: bool, file_keys: Optional[list[str]] = None) -> None:
  missing = sorted(set(table) - set(arrays))
  unexpected = sorted(set(arrays) - set(table))
  wrong = sorted(f'{k}: checkpoint {tuple(arrays[k].shape)}, model {table[k][2]}'
                 for k in set(table) & set(arrays) if tuple(arrays[k].shape) != table[k][2])
  if not (missing or unexpected or wrong):
    return
  lines = [f'the checkpoint does not fit the model ({_describe(model)}):']
  for title, keys in (('missing', missing), ('unexpected', unexpected),
                      ('wrong shape', wrong)):
    if keys:
      more = (f' (and {len(keys) - MAX_KEYS_LISTED} more)'
              if len(keys) > MAX_KEYS_LISTED else '')
      lines.append(f'  {len(keys)} {title}: ' + ', '.join(keys[:MAX_KEYS_LISTED]) + more)
  hint = _layout_hint(list(arrays) if file_keys is None else file_keys, table)
  if hint:
    lines.append(f'  {hint}')
  if not backbone_only and any(k.startswith('fc.') for k in unexpected + wrong):
    lines.append('  To load an ImageNet backbone into a model with another number of classes '
                 'or heads, use backbone_only=True (clan_jax.convert: --backbone_only; '
                 'training: --config.init.torch_backbone_only=True).')
  raise CheckpointError('\n'.join(lines))


def _layout_hint(file_keys: list[str], table: Mapping[str, tuple]) -> str:
  """What the file is when its names are not torchvision's ('' when they are)."""
  for pattern, description in FOREIGN_LAYOUTS:
    if any(pattern.match(key) for key in file_keys):
      return f'The file is {description}.'
  if not file_keys or set(file_keys) & set(table):
    return ''
  first = file_keys[0].split('.')[0] + '.'
  if all(k.startswith(first) for k in file_keys) and any(
      k[len(first):] in table for k in file_keys):
    return (f"Every key of the file begins with '{first}': it holds the ResNet inside another "
            f"module; save that module's own state_dict (e.g. model.{first[:-1]}.state_dict()).")
  return ('No key of the file is a torchvision ResNet name (conv1.weight, layer1.0.conv1.weight, '
          f'..., fc.weight); its first keys: {", ".join(file_keys[:5])}.')


def _describe(model: nn.Module) -> str:
  fields = ('depth', 'num_classes')
  return ', '.join([type(model).__name__] +
                   [f'{f}={getattr(model, f)}' for f in fields if hasattr(model, f)])


def flax_to_torch_arrays(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Flax variables (or a gradient tree under 'params') -> {torch key: numpy array}; no torch."""
  arrays = {}
  for collection in COLLECTIONS:
    flat = traverse_util.flatten_dict(dict(variables.get(collection, {})))
    for path, leaf in flat.items():
      arrays[torch_key(collection, path)] = np.ascontiguousarray(
          to_torch_layout(np.asarray(leaf)))
  return arrays


def flax_to_state_dict_arrays(variables: Mapping[str, Any], model: nn.Module, *,
                              image_size: int = 224) -> dict[str, np.ndarray]:
  """The model's variables -> the twin's whole state_dict as numpy arrays (no torch).

  Checks the variables against the model first (one error listing every mismatch).
  Adds each BatchNorm's `num_batches_tracked` (int64 0), so that
  `load_state_dict(..., strict=True)` accepts it. Arrays keep the variables' dtype.
  """
  arrays = flax_to_torch_arrays(jax.device_get(variables))
  _check_keys(arrays, key_table(abstract_variables(model, image_size)), model, False)
  for key in [k for k in arrays if k.endswith('.running_mean')]:
    arrays[key[:-len('running_mean')] + 'num_batches_tracked'] = np.zeros((), np.int64)
  return arrays


def flax_to_torch(variables: Mapping[str, Any], model: nn.Module, *,
                  image_size: int = 224) -> dict[str, Any]:
  """flax_to_state_dict_arrays as torch tensors: a state_dict that the twin and torchvision
  load strictly."""
  torch = _import_torch()
  return {key: torch.from_numpy(array.copy()) for key, array in
          flax_to_state_dict_arrays(variables, model, image_size=image_size).items()}


# Files a state_dict is written to: safetensors (no torch needed) or torch.save's format.
STATE_DICT_SUFFIXES = ('.safetensors', '.pth', '.pt')


def check_state_dict_output(path: str | os.PathLike) -> str:
  """The absolute path of a state_dict file that save_state_dict can write, or a UserError (a
  wrong suffix, an existing file, a missing folder, a .pth without torch)."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if not path.endswith(STATE_DICT_SUFFIXES):
    raise UserError(f'{path}: the output must end in {" or ".join(STATE_DICT_SUFFIXES)}.')
  if os.path.exists(path):
    raise UserError(f'{path} already exists; it is never overwritten. Remove it or choose '
                    'another output file.')
  if not os.path.isdir(os.path.dirname(path)):
    raise UserError(f'{os.path.dirname(path)}: no such folder for the output.')
  if not path.endswith('.safetensors'):
    _import_torch_to_write()
  return path


def save_state_dict(arrays: Mapping[str, np.ndarray], path: str | os.PathLike,
                    metadata: Optional[Mapping[str, str]] = None) -> str:
  """Writes a state_dict of numpy arrays to `path` (.safetensors, with `metadata`; or .pth /
  .pt through torch.save, tensors only), atomically; an existing file is never overwritten."""
  path = check_state_dict_output(path)
  contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
  if path.endswith('.safetensors'):
    from safetensors.numpy import save_file  # Late: only writing needs it.

    def write(temporary: str) -> None:
      save_file(contiguous, temporary, metadata=dict(metadata or {}))
  else:
    torch = _import_torch_to_write()

    def write(temporary: str) -> None:
      torch.save({k: torch.from_numpy(v.copy()) for k, v in contiguous.items()}, temporary)
  files.write_atomically(path, write)
  return path


def _import_torch_to_write():
  try:
    import torch  # Late: torch is an optional extra.
  except ImportError:
    raise UserError('writing a .pth file needs PyTorch: in the clan-jax folder, pip install -c '
                    'constraints.txt -e ".[torch]", or write a .safetensors file instead (no '
                    'torch needed; safetensors.torch.load_file reads it).') from None
  return torch


# ------------------------------------------------------------------------ command line

def infer_num_classes(arrays: Mapping[str, np.ndarray], requested: int = 0,
                      backbone_only: bool = False) -> int:
  """K: `requested` if > 0, else the rows of the checkpoint's `fc.weight` (not for backbone_only)."""
  if requested > 0:
    return requested
  if backbone_only or 'fc.weight' not in arrays:
    raise UserError('cannot tell the number of classes: pass --num_classes=K.')
  return int(arrays['fc.weight'].shape[0])
