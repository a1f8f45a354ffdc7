"""'synthetic': an embedded fine-grained dataset, drawn procedurally from a seed (numpy only).

Every image shows the same stylised bird (body, head, beak, wing, tail, legs) at a random
position, scale, rotation and facing, in random colours, over a random gradient with
background clutter and pixel noise. The class is ONLY the combination of three small
details drawn in an accent colour: a head marking, a wing pattern and a tail decoration,
each under 5% of the image by construction (`validate` bounds the knobs; tested). Body and
accent colours are random per example and shared by all classes, so neither colour, layout
nor position gives the class away: a classifier has to find and compare local parts, which
is what a fine-grained model is for. Nothing is downloaded or shipped; every example is a
pure function of (spec, split, index), so a TFDS builder can regenerate it anywhere.

Geometry is in 'body units' (the body ellipse has semi-axes 1 x 0.6; u points to the beak,
v down like image rows). Shapes are signed distance functions, painted with a one-pixel
antialiased edge.
"""

import colorsys
import dataclasses
import functools
import math
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

SPLITS = ('train', 'test')
# The three detail slots and their variants. Class k is the k-th combination of `_COMBOS`.
SLOTS = ('head', 'wing', 'tail')
VARIANTS = {
    'head': ('crest', 'cap', 'masked', 'throat'),
    'wing': ('barred', 'spotted', 'tipped', 'striped'),
    'tail': ('fork', 'round', 'banded', 'pin'),
}
MAX_DETAIL_FRACTION = 0.05  # The bound on each detail's share of the image.

# Knob ranges that `validate` enforces; with them every detail stays under 5% of the image.
_RANGES = {
    'image_size': (32, 1024),
    'detail_scale': (0.5, 1.5),
    'scale_range': (0.3, 0.8),
    'max_rotation': (0.0, 45.0),
    'clutter': (0, 64),
    'colour_jitter': (0.0, 1.0),
    'noise': (0.0, 0.25),
}

# Layout (body units). The bird is ~3.6 units from tail end to beak tip, decorations excluded.
_OBJECT_LENGTH = 3.6
_HEAD = (1.0, -0.5)
_HEAD_RADIUS = 0.42
_WING = (-0.15, -0.08)
_WING_ANGLE = 0.15  # Radians; lifts the wing's rear end.
_WING_AXES = (0.68, 0.3)
_TAIL_ROOT = (-0.85, -0.05)
_TAIL_ANGLE = np.pi + 0.26  # Backwards and a little up.
_TAIL_LENGTH = 0.9
_TAIL_TIP = (_TAIL_ROOT[0] + _TAIL_LENGTH * math.cos(_TAIL_ANGLE),
             _TAIL_ROOT[1] + _TAIL_LENGTH * math.sin(_TAIL_ANGLE))
_EYE = (1.15, -0.58)


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """What to generate. The defaults give 20 classes x (60 train + 20 test) images of 128 px.

  Difficulty knobs:
    detail_scale: size of the discriminative details relative to the bird (0.5-1.5); smaller
      is harder. At the defaults a detail covers ~0.4-1.4% of the image; at the largest
      knobs (1.5, birds 0.8 of the image) at most ~3.5%.
    scale_range: (min, max) bird length, tail end to beak tip (decorations excluded), as a
      fraction of the image side (0.3-0.8). A bird that would not fit whole (details and
      rotation included) is shrunk until it does.
    max_rotation: the bird is rotated uniformly in +-max_rotation degrees.
    flip: whether the bird faces left or right at random (else always right).
    clutter: number of random distractor shapes (discs, boxes, sticks, triangles) behind it.
    colour_jitter: hue spread of body and accent colours, 0 (one palette) to 1 (any hue).
    noise: std of the Gaussian pixel noise, as a fraction of the 0-255 range.
  """
  num_classes: int = 20
  image_size: int = 128
  train_per_class: int = 60
  test_per_class: int = 20
  seed: int = 0
  detail_scale: float = 1.0
  scale_range: Tuple[float, float] = (0.5, 0.75)
  max_rotation: float = 20.0
  flip: bool = True
  clutter: int = 12
  colour_jitter: float = 1.0
  noise: float = 0.03

  def validate(self) -> None:
    """Raises ValueError naming the first bad field and its allowed range."""
    _check_int('num_classes', self.num_classes, 2, max_classes(self))
    _check_int('image_size', self.image_size, *_RANGES['image_size'])
    _check_int('train_per_class', self.train_per_class, 1, None)
    _check_int('test_per_class', self.test_per_class, 1, None)
    _check_int('seed', self.seed, 0, None)  # SeedSequence takes non-negative entropy only.
    _check_float('detail_scale', self.detail_scale, *_RANGES['detail_scale'])
    lo, hi = _RANGES['scale_range']
    sr = self.scale_range
    if (not isinstance(sr, (tuple, list)) or len(sr) != 2
        or not all(_is_number(x) for x in sr) or not lo <= sr[0] <= sr[1] <= hi):
      raise ValueError(f'scale_range must be a pair (min, max) with {lo} <= min <= max <= {hi}; '
                       f'got {sr!r}')
    _check_float('max_rotation', self.max_rotation, *_RANGES['max_rotation'])
    if not isinstance(self.flip, (bool, np.bool_)):
      raise ValueError(f'flip must be a bool; got {self.flip!r}')
    _check_int('clutter', self.clutter, *_RANGES['clutter'])
    _check_float('colour_jitter', self.colour_jitter, *_RANGES['colour_jitter'])
    _check_float('noise', self.noise, *_RANGES['noise'])


def _is_number(x) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_int(name: str, value, lo: int, hi: Optional[int]) -> None:
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
  if not ok or value < lo or (hi is not None and value > hi):
    allowed = f'>= {lo}' if hi is None else f'in [{lo}, {hi}]'
    raise ValueError(f'{name} must be an integer {allowed}; got {value!r}')


def _check_float(name: str, value, lo: float, hi: float) -> None:
  if not _is_number(value) or not lo <= value <= hi:
    raise ValueError(f'{name} must be a number in [{lo}, {hi}]; got {value!r}')


def _combos() -> List[Tuple[int, int, int]]:
  """All variant combinations in class order.

  Block `shift` holds (a, b, (a + b + shift) % n): within a block any two classes differ in
  at least two slots and every variant appears equally often, so the first classes (the
  default 20 = one block + 4) use every detail rather than varying only the tail.
  """
  n = len(VARIANTS['head'])
  return [(a, b, (a + b + shift) % n) for shift in range(n) for a in range(n) for b in range(n)]


_COMBOS = _combos()


def max_classes(spec_or_none: Optional[SyntheticSpec] = None) -> int:
  """How many distinct classes the detail combinatorics allow (the same for every spec)."""
  del spec_or_none  # Accepted so callers need not care whether a future knob changes it.
  return len(_COMBOS)


def class_names(spec: SyntheticSpec) -> List[str]:
  """Human-readable names, e.g. 'crest-head_barred-wing_fork-tail', one per label."""
  spec.validate()
  return ['_'.join(f'{VARIANTS[slot][v]}-{slot}' for slot, v in zip(SLOTS, combo))
          for combo in _COMBOS[:spec.num_classes]]


def split_sizes(spec: SyntheticSpec) -> Dict[str, int]:
  spec.validate()
  return {'train': spec.num_classes * spec.train_per_class,
          'test': spec.num_classes * spec.test_per_class}


def render(spec: SyntheticSpec, split: str, index: int) -> Tuple[np.ndarray, int]:
  """The index-th example of `split`: (uint8 image (S, S, 3), label); labels cycle 0..K-1."""
  label = _label(spec, split, index)
  return _draw(spec, _scene(spec, split, index), label), label


def generate(spec: SyntheticSpec, split: str) -> Iterator[Tuple[int, np.ndarray, int]]:
  """(index, image, label) for every example of `split`, in index order."""
  for index in range(split_sizes(spec)[_check_split(split)]):
    image, label = render(spec, split, index)
    yield index, image, label


def detail_masks(spec: SyntheticSpec, split: str, index: int,
                 label: Optional[int] = None) -> Dict[str, np.ndarray]:
  """{slot: bool (S, S)} pixels that each detail of the example touches (its antialiased edge too).

  `label` overrides the example's own label, keeping the rest of its randomness.
  """
  own_label = _label(spec, split, index)  # Validates spec, split and index.
  label = own_label if label is None else _check_label(spec, label)
  scene = _scene(spec, split, index)
  u, v = _object_coords(spec.image_size, scene)
  masks = {}
  for slot, variant in zip(SLOTS, _COMBOS[label]):
    mask = np.zeros((spec.image_size,) * 2, bool)
    sdf = _detail_sdf(slot, variant, u, v, spec.detail_scale)
    mask[scene.window] = _alpha(sdf, scene.scale) > 0
    masks[slot] = mask
  return masks


def _render_as(spec: SyntheticSpec, split: str, index: int, label: int) -> np.ndarray:
  """The example's image drawn with another label: same bird, colours, background and noise."""
  _label(spec, split, index)  # Validates.
  return _draw(spec, _scene(spec, split, index), _check_label(spec, label))


def _check_label(spec: SyntheticSpec, label: int) -> int:
  if not isinstance(label, (int, np.integer)) or not 0 <= label < spec.num_classes:
    raise ValueError(f'label must be in [0, {spec.num_classes}); got {label!r}')
  return int(label)


def _check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}; got {split!r}')
  return split


def _label(spec: SyntheticSpec, split: str, index: int) -> int:
  size = split_sizes(spec)[_check_split(split)]
  if not isinstance(index, (int, np.integer)) or not 0 <= index < size:
    raise IndexError(f'index must be in [0, {size}) for split {split!r}; got {index!r}')
  return int(index) % spec.num_classes


# ----------------------------------------------------------------------------------------
# Signed distance functions (negative inside) on coordinate arrays u, v.


def _disc(u, v, cu, cv, r):
  return np.hypot(u - cu, v - cv) - r


def _ellipse(u, v, a, b):
  """A close approximation of the distance to an axis-aligned ellipse (exact on its boundary)."""
  k0 = np.hypot(u / a, v / b)
  k1 = np.hypot(u / (a * a), v / (b * b))
  return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _box(u, v, cu, cv, hu, hv):
  du, dv = np.abs(u - cu) - hu, np.abs(v - cv) - hv
  return np.hypot(np.maximum(du, 0), np.maximum(dv, 0)) + np.minimum(np.maximum(du, dv), 0)


def _polygon(u, v, points):
  """A convex polygon: the largest signed distance to its edge lines (exact inside)."""
  pts = [(float(x), float(y)) for x, y in points]
  edges = list(zip(pts, pts[1:] + pts[:1]))
  clockwise = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in edges) < 0
  d = None
  for (x0, y0), (x1, y1) in edges:
    ex, ey = x1 - x0, y1 - y0
    norm = math.hypot(ex, ey) * (-1 if clockwise else 1)
    edge = ((u - x0) * ey - (v - y0) * ex) / norm  # Positive on the outer side.
    d = edge if d is None else np.maximum(d, edge)
  return d


def _segment(u, v, p0, p1, half_width):
  (x0, y0), (x1, y1) = p0, p1
  ex, ey = x1 - x0, y1 - y0
  t = np.clip(((u - x0) * ex + (v - y0) * ey) / (ex * ex + ey * ey), 0, 1)
  return np.hypot(u - x0 - t * ex, v - y0 - t * ey) - half_width


def _frame(u, v, origin, angle=0.0, scale=1.0):
  """Coordinates in a frame at `origin`, turned by `angle` and enlarged by `scale`."""
  c, s = math.cos(angle), math.sin(angle)
  du, dv = u - origin[0], v - origin[1]
  return (c * du + s * dv) / scale, (-s * du + c * dv) / scale


def _alpha(sdf, pixels_per_unit):
  """Coverage with a one-pixel antialiased edge."""
  a = 0.5 - sdf * pixels_per_unit
  return np.minimum(np.maximum(a, 0.0, out=a), 1.0, out=a)


# ----------------------------------------------------------------------------------------
# The bird and its details.


def _tail_sdf(u, v):
  t, w = _frame(u, v, _TAIL_ROOT, _TAIL_ANGLE)
  return _polygon(t, w, [(0, -0.18), (_TAIL_LENGTH, -0.3), (_TAIL_LENGTH, 0.3), (0, 0.18)])


def _wing_sdf(u, v):
  return _ellipse(*_frame(u, v, _WING, _WING_ANGLE), *_WING_AXES)


def _head_detail(variant, p, q):
  """Head markings in the head's frame (origin at its centre, radius 0.42)."""
  if variant == 'crest':
    return _polygon(p, q, [(-0.25, -0.3), (0.2, -0.38), (-0.38, -0.95)])
  if variant == 'cap':
    return np.maximum(_disc(p, q, 0, 0, 0.45), q + 0.1)
  if variant == 'masked':  # A band through the eye.
    return _box(p, q, 0.12, -0.08, 0.42, 0.1)
  return np.maximum(_disc(p, q, 0, 0, 0.45), 0.1 - q)  # 'throat'


def _wing_detail(variant, p, q):
  """Wing patterns in the wing's frame (origin at its centre, front towards +p)."""
  wing = _ellipse(p, q, *_WING_AXES)
  if variant == 'barred':
    bars = np.minimum(_box(p, q, -0.3, 0, 0.08, 0.4), _box(p, q, 0.1, 0, 0.08, 0.4))
    return np.maximum(wing, bars)
  if variant == 'spotted':
    return np.minimum.reduce([_disc(p, q, x, 0, 0.13) for x in (-0.38, 0.0, 0.38)])
  if variant == 'tipped':  # The rear third.
    return np.maximum(wing, p + 0.28)
  return np.maximum(wing, np.abs(q) - 0.09)  # 'striped': along the wing.


def _tail_detail(variant, p, q):
  """Tail decorations in the tail tip's frame (origin at the tip, pointing away from the body)."""
  if variant == 'fork':
    prongs = [[(-0.1, s * 0.05), (-0.1, s * 0.34), (0.5, s * 0.42)] for s in (1, -1)]
    return np.minimum(*[_polygon(p, q, pr) for pr in prongs])
  if variant == 'round':
    return _disc(p, q, 0.1, 0, 0.3)
  if variant == 'banded':
    return np.minimum(_box(p, q, -0.22, 0, 0.07, 0.3), _box(p, q, -0.55, 0, 0.07, 0.27))
  return _polygon(p, q, [(-0.1, -0.13), (0.75, -0.03), (0.75, 0.03), (-0.1, 0.13)])  # 'pin'.


_DETAIL_FRAMES = {
    'head': (_HEAD, 0.0, _head_detail),
    'wing': (_WING, _WING_ANGLE, _wing_detail),
    'tail': (_TAIL_TIP, _TAIL_ANGLE, _tail_detail),
}


def _detail_sdf(slot: str, variant: int, u, v, detail_scale: float):
  origin, angle, fn = _DETAIL_FRAMES[slot]
  p, q = _frame(u, v, origin, angle, detail_scale)
  return fn(VARIANTS[slot][variant], p, q) * detail_scale


def _legs_sdf(u, v):
  return np.minimum(_segment(u, v, (0.15, 0.5), (0.25, 1.0), 0.04),
                    _segment(u, v, (-0.2, 0.5), (-0.2, 1.0), 0.04))


# The shared layout, back to front: (sdf in body units, colour name).
_BODY_PARTS: List[Tuple[Callable, str]] = [
    (_tail_sdf, 'body'),
    (_legs_sdf, 'beak'),
    (lambda u, v: _ellipse(u, v, 1.0, 0.6), 'body'),
    (_wing_sdf, 'wing'),
    (lambda u, v: _disc(u, v, *_HEAD, _HEAD_RADIUS), 'body'),
    (lambda u, v: _polygon(u, v, [(1.32, -0.66), (1.85, -0.48), (1.32, -0.32)]), 'beak'),
]


_OUTLINE_STEP = 0.05


@functools.lru_cache(maxsize=16)
def _outline(detail_scale: float) -> np.ndarray:
  """Points (body units, on a grid) covering the bird with every variant of every detail.

  Placing these inside the image keeps any class's bird whole, whatever the rotation.
  """
  v, u = np.mgrid[-4:4:_OUTLINE_STEP, -4:4:_OUTLINE_STEP]
  sdf = np.minimum.reduce([fn(u, v) for fn, _ in _BODY_PARTS] + [
      _detail_sdf(slot, variant, u, v, detail_scale)
      for slot in SLOTS for variant in range(len(VARIANTS[slot]))])
  # Every point of a shape lies within step / sqrt(2) of a grid point, so these points,
  # padded by a step, cover every shape; a whole step leaves room for the sdfs' approximations.
  inside = sdf <= _OUTLINE_STEP
  return np.stack([u[inside], v[inside]], 1)


# ----------------------------------------------------------------------------------------
# Scenes: all of an example's randomness, drawn before and independently of its label.


@dataclasses.dataclass(frozen=True)
class _Scene:
  centre: Tuple[float, float]  # Pixels (x, y) of the body centre.
  scale: float  # Pixels per body unit.
  angle: float  # Radians.
  flip: bool  # Faces left.
  window: Tuple[slice, slice]  # The rows and columns that the bird may touch.
  colours: Dict[str, np.ndarray]  # RGB in [0, 1].
  background: np.ndarray  # (S, S, 3) float32, clutter included.
  noise: np.ndarray  # (S, S, 3) float32.


def _rng(spec: SyntheticSpec, split: str, index: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([spec.seed, SPLITS.index(split), index]))


def _hsv(h, s, v) -> np.ndarray:
  return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _scene(spec: SyntheticSpec, split: str, index: int) -> _Scene:
  rng = _rng(spec, split, index)
  size = spec.image_size
  # Python floats keep the float32 pixel arithmetic in float32.
  scale = float(rng.uniform(*spec.scale_range)) * size / _OBJECT_LENGTH
  angle = float(np.deg2rad(rng.uniform(-spec.max_rotation, spec.max_rotation)))
  flip = bool(spec.flip and rng.random() < 0.5)
  # Keep the whole bird, details included, inside the image: shrink it if it cannot fit
  # (only large, rotated birds with large details), then place it anywhere it fits.
  pts = _to_pixels(_outline(float(spec.detail_scale)), (0.0, 0.0), 1.0, angle, flip)
  scale = min(scale, float((size - 2) / (np.ptp(pts, 0).max() + 2 * _OUTLINE_STEP)))
  pts *= scale
  pad = 1 + _OUTLINE_STEP * scale  # Pixels: the outline's padding and the antialiased edge.
  lo = -pts.min(0) + pad
  hi = np.maximum(size - pts.max(0) - pad, lo)
  cx, cy = (float(c) for c in rng.uniform(lo, hi))
  window = (_span(cy + pts[:, 1].min(), cy + pts[:, 1].max(), size),
            _span(cx + pts[:, 0].min(), cx + pts[:, 0].max(), size))
  colours = _colours(spec, rng)
  background = _background(spec, rng)
  noise = rng.standard_normal((size, size, 3), np.float32) * np.float32(spec.noise)
  return _Scene((cx, cy), scale, angle, flip, window, colours, background, noise)


def _span(lo: float, hi: float, size: int) -> slice:
  """Whole pixels covering [lo, hi] plus the antialiased edge, clipped to the image."""
  return slice(max(math.floor(lo) - 2, 0), min(math.ceil(hi) + 2, size))


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates (ys, xs), read-only and shared."""
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
  ys.flags.writeable = xs.flags.writeable = False
  return ys, xs


def _colours(spec: SyntheticSpec, rng: np.random.Generator) -> Dict[str, np.ndarray]:
  """Body, wing, accent (all details), beak, eye. The accent contrasts in hue and brightness."""
  hue = 0.08 + spec.colour_jitter * rng.uniform(-0.5, 0.5)
  value = rng.uniform(0.4, 0.9)
  body = _hsv(hue, rng.uniform(0.3, 0.8), value)
  accent_value = rng.uniform(0.15, 0.3) if value > 0.65 else rng.uniform(0.9, 1.0)
  accent = _hsv(hue + 0.5 + rng.uniform(-0.12, 0.12) * spec.colour_jitter,
                rng.uniform(0.8, 1.0), accent_value)
  beak = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.8), rng.uniform(0.2, 0.7))
  wing = body * np.float32(rng.uniform(0.6, 0.8))
  return {'body': body, 'wing': wing, 'accent': accent, 'beak': beak,
          'eye': np.array([0.05, 0.05, 0.05], np.float32)}


def _background(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
  """A linear gradient between two random colours, with random shapes painted over it."""
  size = spec.image_size
  ys, xs = _grid(size)
  theta = float(rng.uniform(0, 2 * np.pi))
  t = math.cos(theta) * xs + math.sin(theta) * ys
  t = (t - t.min()) / (t.max() - t.min())
  c0, c1 = rng.uniform(0.1, 0.9, (2, 3)).astype(np.float32)
  canvas = c0 + (c1 - c0) * t[..., None]
  # One draw for all shapes: per-call Generator overhead dominates at this size.
  params = rng.random((spec.clutter, 6)).tolist()
  colours = rng.random((spec.clutter, 3), np.float32)
  for (k, r, cx, cy, angle, aspect), colour in zip(params, colours):
    kind, r, cx, cy = int(4 * k), (0.03 + 0.09 * r) * size, cx * size, cy * size
    # Only the shape's neighbourhood: its longest reach is 1.5 r (the stick).
    rows, cols = _span(cy - 1.6 * r, cy + 1.6 * r, size), _span(cx - 1.6 * r, cx + 1.6 * r, size)
    p, q = _frame(xs[rows, cols], ys[rows, cols], (cx, cy), np.pi * angle)
    a = _alpha(_clutter_sdf(kind, p, q, r, 0.3 + 0.7 * aspect), 1.0)[..., None]
    canvas[rows, cols] += (colour - canvas[rows, cols]) * a
  return canvas


def _clutter_sdf(kind: int, p, q, r: float, aspect: float):
  """One distractor (pixels): disc, rotated box, stick or triangle of 3-12% of the image side."""
  if kind == 0:
    return _disc(p, q, 0, 0, r)
  if kind == 1:
    return _box(p, q, 0, 0, r, r * aspect)
  if kind == 2:
    return _segment(p, q, (-1.5 * r, 0), (1.5 * r, 0), max(1.0, 0.12 * r))
  return _polygon(p, q, [(-r, r * aspect), (r, r * aspect), (0, -r)])


def _to_pixels(points: np.ndarray, centre, scale: float, angle: float, flip: bool) -> np.ndarray:
  """Body units -> pixel (x, y); the inverse of `_object_coords`."""
  u, v = points[:, 0] * (-1 if flip else 1), points[:, 1]
  c, s = math.cos(angle), math.sin(angle)
  return np.stack([centre[0] + scale * (c * u - s * v), centre[1] + scale * (s * u + c * v)], 1)


def _object_coords(size: int, scene: _Scene):
  """The pixel centres of the bird's window in body units."""
  ys, xs = _grid(size)
  u, v = _frame(xs[scene.window], ys[scene.window], scene.centre, scene.angle, scene.scale)
  return (-u if scene.flip else u), v


def _draw(spec: SyntheticSpec, scene: _Scene, label: int) -> np.ndarray:
  u, v = _object_coords(spec.image_size, scene)
  colours = scene.colours
  layers = [(fn(u, v), colours[name]) for fn, name in _BODY_PARTS]
  for slot, variant in zip(SLOTS, _COMBOS[label]):
    layers.append((_detail_sdf(slot, variant, u, v, spec.detail_scale), colours['accent']))
  layers.append((_disc(u, v, *_EYE, 0.075), colours['eye']))
  canvas = scene.background.copy()
  window = canvas[scene.window]  # A view: painting it paints the canvas.
  for sdf, colour in layers:
    window += (colour - window) * _alpha(sdf, scene.scale)[..., None]
  canvas += scene.noise
  return np.round(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8)
