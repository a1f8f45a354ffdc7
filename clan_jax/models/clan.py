"""CLAN: the Cross-layer Attention Network on a ResNet backbone (docs/MODEL.md).

One backbone pass gives the mid-level maps (`mid_stages`, default layer2 and layer3) and
the top-level map T (layer4). CLCA refines each mid map with context from T (top ->
mid); CLSA turns the refined mid maps into a spatial attention that reweights T into T'
(mid -> top). Heads: `fc` on GAP(T'), one head per refined mid map, and a concat head;
the prediction fuses them (`fusion`).

Submodule names map onto the PyTorch twin's keys (clan_jax.convert): `clca_layer2` is
`clca.layer2`, `heads_concat` is `heads.concat`.
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from clan_jax.models.conv_forms import clsa_conv
from clan_jax.models.fields import CLCA_ORDERS, check_image_size
from clan_jax.models.layers import BatchNorm, Linear, compute_dtype, conv, pointwise_weights
from clan_jax.models.resnet import ResNet, global_average_pool

Dtype = Any


class CrossAttentionContext(nn.Module):
  """CLCA, 'cross_attention': every mid position attends over the top map's positions.

  Two orders compute the same function with the same parameters (docs/MODEL.md):
  'standard' projects the mid map to queries, attends, then projects the context back
  (`out`); 'folded' multiplies the query and `out` kernels into the keys and values
  instead, so that the attention runs in the mid map's channels and the two large
  projections of the mid map disappear. 'auto' takes the one with fewer multiply-adds
  for the static shapes, and 'standard' where cuDNN's fused attention will run.
  """
  dim: int
  heads: int = 1
  dtype: Optional[Dtype] = None
  conv1x1_as_matmul: bool = True
  # jax.nn.dot_product_attention's implementation when the weights are not returned:
  # 'auto' (cuDNN's fused kernel on a GPU in bfloat16, else XLA), 'xla' or 'cudnn'.
  attention_impl: str = 'auto'
  order: str = 'auto'  # CLCA_ORDERS.
  bn_impl: str = 'two_pass'  # layers.BN_IMPLS.

  @nn.compact
  def __call__(self, mid: jax.Array, top: jax.Array, train: bool,
               return_attention: bool = True):
    batch, mid_h, mid_w, mid_channels = mid.shape
    top_positions = top.shape[1] * top.shape[2]
    head_dim = self.dim // self.heads

    def project(name, x, positions):
      y = conv(self.dim, 1, in_features=x.shape[-1], dtype=self.dtype,
               as_matmul=self.conv1x1_as_matmul, name=name)(x)
      return y.reshape(batch, positions, self.heads, head_dim)  # Heads: contiguous chunks.

    k = project('key', top, top_positions)
    v = project('value', top, top_positions)
    implementation = None if return_attention else attention_implementation(
        self.attention_impl, k.dtype)
    if self._folds(mid_h * mid_w, top_positions, mid_channels, implementation):
      y, attention = self._folded(mid, k, v)
    else:
      q = project('query', mid, mid_h * mid_w)
      if return_attention:
        context, attention = attention_with_weights(q, k, v)
      else:
        context, attention = fused_attention(q, k, v, implementation), None
      context = context.reshape(batch, mid_h, mid_w, self.dim)
      y = conv(mid_channels, 1, dtype=self.dtype, as_matmul=self.conv1x1_as_matmul,
               name='out')(context)
    # BN scale 0: the block is the identity at initialisation.
    y = BatchNorm(scale_init=nn.initializers.zeros, impl=self.bn_impl, name='bn')(y, train)
    return mid + y.astype(mid.dtype), (attention if return_attention else None)

  def _folds(self, queries: int, keys: int, channels: int, implementation) -> bool:
    if self.order not in CLCA_ORDERS:
      raise ValueError(f'order={self.order!r}; allowed: {", ".join(CLCA_ORDERS)}.')
    if self.order != 'auto':
      return self.order == 'folded'
    if implementation == 'cudnn':  # The fused kernel takes head widths up to 256.
      return False
    return folded_order_multiply_adds(queries, keys, channels, self.heads, self.dim) < (
        standard_order_multiply_adds(queries, keys, channels, self.dim))

  def _folded(self, mid: jax.Array, k: jax.Array, v: jax.Array):
    """softmax((mid Wq + bq) k^T / sqrt(d)) v Wout, as softmax((mid (k Wq^T)^T + k bq) /
    sqrt(d)) (v Wout): per image and head, keys x channels products instead of mid-sized
    ones. Returns the block's output before BN and the weights (B, h, queries, keys)."""
    batch, mid_h, mid_w, channels = mid.shape
    _, _, heads, head_dim = k.shape
    w_query, b_query = pointwise_weights(self.dim, in_features=channels, name='query')(channels)
    w_out, _ = pointwise_weights(channels, name='out')(self.dim)
    dtype = k.dtype
    w_query = w_query.reshape(channels, heads, head_dim).astype(dtype)
    w_out = w_out.reshape(heads, head_dim, channels).astype(dtype)
    logits_dtype = compute_dtype(k)
    key_in_mid = jnp.einsum('bkhd,chd->bhkc', k, w_query)
    key_bias = jnp.einsum('bkhd,hd->bhk', k, b_query.reshape(heads, head_dim).astype(dtype),
                          preferred_element_type=logits_dtype)
    flat_mid = mid.reshape(batch, mid_h * mid_w, channels).astype(dtype)
    logits = jnp.einsum('bqc,bhkc->bhqk', flat_mid, key_in_mid,
                        preferred_element_type=logits_dtype) + key_bias[:, :, None, :]
    attention = jax.nn.softmax(logits / math.sqrt(head_dim), axis=-1)
    value_in_mid = jnp.einsum('bkhd,hdc->bhkc', v, w_out)
    y = jnp.einsum('bhqk,bhkc->bqc', attention.astype(dtype), value_in_mid)
    return y.reshape(batch, mid_h, mid_w, channels), attention


def standard_order_multiply_adds(queries: int, keys: int, channels: int, dim: int) -> int:
  """Multiply-adds per image of CLCA's order-dependent part, standard order: the query
  and `out` projections of the mid map, and the attention in `dim` channels."""
  return 2 * queries * channels * dim + 2 * queries * keys * dim


def folded_order_multiply_adds(queries: int, keys: int, channels: int, heads: int,
                               dim: int) -> int:
  """The same in the folded order: the kernels folded into keys and values, and the
  attention in the mid map's channels, per head."""
  return 2 * keys * dim * channels + 2 * queries * keys * heads * channels


def attention_implementation(requested: str, dtype) -> str:
  """'auto' resolved: cuDNN's fused kernel on a GPU in bfloat16 or float16, else XLA."""
  if requested != 'auto':
    return requested
  on_gpu = jax.default_backend() == 'gpu'
  return 'cudnn' if on_gpu and dtype in (jnp.bfloat16, jnp.float16) else 'xla'


def attention_with_weights(q: jax.Array, k: jax.Array, v: jax.Array):
  """softmax(q k^T / sqrt(d)) v over (B, positions, heads, d); also returns the weights
  (B, h, queries, keys), float32 at least."""
  # Logits accumulate and stay in float32 under bf16: their rounding error would grow
  # with their magnitude and reshape a sharp softmax.
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=compute_dtype(q))
  attention = jax.nn.softmax(logits / math.sqrt(q.shape[-1]), axis=-1)
  return jnp.einsum('bhqk,bkhd->bqhd', attention.astype(v.dtype), v), attention


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, implementation: str) -> jax.Array:
  """The same output through jax.nn.dot_product_attention, which never materialises the
  weights with implementation 'cudnn' (flash attention; bfloat16 or float16 on a GPU).
  float64 (parity checks) keeps the plain path: jax's XLA version accumulates in float32."""
  if q.dtype == jnp.float64:
    return attention_with_weights(q, k, v)[0]
  return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


class GlobalContext(nn.Module):
  """CLCA, 'global_context' (GCNet-style): one attention-pooled context vector of T per image."""
  dim: int
  dtype: Optional[Dtype] = None
  conv1x1_as_matmul: bool = True

  @nn.compact
  def __call__(self, mid: jax.Array, top: jax.Array, train: bool,
               return_attention: bool = True):
    del train, return_attention  # No BatchNorm here; the pooling weights are cheap.
    batch, top_h, top_w, top_channels = top.shape
    mask = conv(1, 1, in_features=top_channels, dtype=self.dtype,
                as_matmul=self.conv1x1_as_matmul, name='mask')(top)
    mask = mask.reshape(batch, top_h * top_w)
    weights = jax.nn.softmax(mask.astype(compute_dtype(mask)), axis=-1)  # (B, Ht*Wt)
    flat_top = top.reshape(batch, top_h * top_w, top_channels)
    context = jnp.einsum('bp,bpc->bc', weights, flat_top.astype(weights.dtype))
    y = Linear(self.dim, dtype=self.dtype, name='reduce')(context)
    y = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, param_dtype=jnp.float32,
                     name='norm')(y.astype(compute_dtype(y)))
    # Zero-initialised: the block is the identity at initialisation.
    y = Linear(mid.shape[-1], dtype=self.dtype, zero_init=True, name='expand')(nn.relu(y))
    return mid + y[:, None, None, :].astype(mid.dtype), weights


class MidHead(nn.Module):
  """Conv1x1 -> BN -> ReLU -> GAP = z -> Linear: the classifier of one refined mid map."""
  head_dim: int
  num_classes: int
  dtype: Optional[Dtype] = None
  conv1x1_as_matmul: bool = True
  bn_impl: str = 'two_pass'  # layers.BN_IMPLS.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool):
    y = conv(self.head_dim, 1, dtype=self.dtype, as_matmul=self.conv1x1_as_matmul,
             name='conv')(x)
    z = global_average_pool(BatchNorm(impl=self.bn_impl, relu=True, name='bn')(y, train))
    return Linear(self.num_classes, name='fc')(z), z


def spatial_attention(conv_module: nn.Module, x: jax.Array) -> jax.Array:
  """CLSA's map of one refined mid map: sigmoid(conv7x7([mean_c, max_c])), float32 at least."""
  stats_dtype = compute_dtype(x)
  pooled = jnp.stack([jnp.mean(x.astype(stats_dtype), axis=-1),
                      jnp.max(x, axis=-1).astype(stats_dtype)], axis=-1)
  logits = conv_module(pooled.astype(x.dtype))
  return jax.nn.sigmoid(logits.astype(stats_dtype))


def check_input_size(images: jax.Array) -> None:
  """CLSA's pooling windows are whole numbers only for sizes that are multiples of 32."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'images must be NHWC with 3 channels; got shape {images.shape}.')
  check_image_size(int(images.shape[1]), 'image height')
  check_image_size(int(images.shape[2]), 'image width')


class CLAN(nn.Module):
  """CLAN on a ResNet; `apply` returns the output dict of docs/MODEL.md."""
  num_classes: int
  depth: int = 50
  mid_stages: tuple[int, ...] = (2, 3)
  use_clca: bool = True
  use_clsa: bool = True
  clca_kind: str = 'cross_attention'
  clca_dim: int = 256
  clca_heads: int = 1
  head_dim: int = 512
  fusion: str = 'sum'
  dtype: Optional[Dtype] = None
  conv1x1_as_matmul: bool = True  # Implementation switches: the same parameters either way.
  attention_impl: str = 'auto'
  clca_order: str = 'auto'
  remat: bool = False
  bn_impl: str = 'two_pass'  # Resolved by create_model (model.bn_impl='auto').
  downsample_impl: str = 'slice_matmul'  # The forms of models/conv_forms.py (same function).
  stem_channels: int = 3
  clsa_impl: str = 'conv'

  @property
  def mid_names(self) -> tuple[str, ...]:
    return tuple(f'layer{stage}' for stage in self.mid_stages)

  def setup(self):
    self.backbone = ResNet(self.depth, dtype=self.dtype, conv1x1_as_matmul=self.conv1x1_as_matmul,
                           remat=self.remat, bn_impl=self.bn_impl,
                           downsample_impl=self.downsample_impl, stem_channels=self.stem_channels)
    if self.use_clca:
      self.clca = {name: self._clca_block() for name in self.mid_names}
    if self.use_clsa:
      self.clsa = {name: clsa_conv(self.clsa_impl, dtype=self.dtype) for name in self.mid_names}
    heads = {name: MidHead(self.head_dim, self.num_classes, dtype=self.dtype,
                           conv1x1_as_matmul=self.conv1x1_as_matmul, bn_impl=self.bn_impl)
             for name in self.mid_names}
    heads['concat'] = Linear(self.num_classes)
    self.heads = heads
    self.fc = Linear(self.num_classes)

  def _clca_block(self) -> nn.Module:
    if self.clca_kind == 'cross_attention':
      return CrossAttentionContext(self.clca_dim, self.clca_heads, dtype=self.dtype,
                                   conv1x1_as_matmul=self.conv1x1_as_matmul,
                                   attention_impl=self.attention_impl, order=self.clca_order,
                                   bn_impl=self.bn_impl)
    if self.clca_kind == 'global_context':
      return GlobalContext(self.clca_dim, dtype=self.dtype,
                           conv1x1_as_matmul=self.conv1x1_as_matmul)
    raise ValueError(f'clca_kind={self.clca_kind!r}; allowed: cross_attention, global_context.')

  def __call__(self, images: jax.Array, train: bool = False,
               return_attention: bool = False) -> dict[str, Any]:
    check_input_size(images)
    features = self.backbone(images, train)
    top = features['layer4']
    mids = {name: features[name] for name in self.mid_names}
    outputs = {}
    if self.use_clca:
      attention = {}
      for name in self.mid_names:
        mids[name], attention[name] = self.clca[name](mids[name], top, train,
                                                      return_attention)
      if return_attention:
        outputs['clca'] = attention
    if self.use_clsa:
      outputs['clsa'] = self._spatial_attention(mids, top.shape[1:3])
      top = (top * (1 + outputs['clsa']['fused'])).astype(top.dtype)  # T' = T (1 + S)
    outputs['heads'] = self._heads(mids, top, train)
    outputs['logits'] = self._fuse(outputs['heads'])
    return outputs

  def _spatial_attention(self, mids: dict[str, jax.Array], top_size) -> dict[str, jax.Array]:
    maps, pooled = {}, []
    for name in self.mid_names:
      maps[name] = spatial_attention(self.clsa[name], mids[name])
      window = (maps[name].shape[1] // top_size[0], maps[name].shape[2] // top_size[1])
      pooled.append(nn.avg_pool(maps[name], window, strides=window))
    maps['fused'] = sum(pooled) / len(pooled)
    return maps

  def _heads(self, mids: dict[str, jax.Array], top: jax.Array, train: bool):
    pooled_top = global_average_pool(top)
    heads = {'top': self.fc(pooled_top)}
    embeddings = [pooled_top]
    for name in self.mid_names:  # Ascending stage order, as the twin's concat.
      heads[name], z = self.heads[name](mids[name], train)
      embeddings.append(z)
    heads['concat'] = self.heads['concat'](jnp.concatenate(embeddings, axis=-1))
    return heads

  def _fuse(self, heads: dict[str, jax.Array]) -> jax.Array:
    if self.fusion == 'sum':
      return sum(heads.values())
    return heads[self.fusion]  # 'top' or 'concat'.

  def features(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """The backbone's stage features, before CLCA (for parity checks)."""
    return self.backbone(images, train)
