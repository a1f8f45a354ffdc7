"""Draws CLAN's architecture, with the tensor shapes of the real model, as a PNG.

    python scripts/draw_architecture.py [--config=configs/default.py] [--image_size=448]
        [--num_classes=200] [--output=docs/images/architecture.png]

Every shape in the picture is read from `jax.eval_shape` of the configured model (no
weights, no compute), through a method interceptor that records what each submodule
receives and returns, so the picture cannot drift from the code; the labels restate
docs/MODEL.md in a few words. The script refuses to write a picture in which two labels
overlap or a label leaves its box (a longer shape or name would otherwise garble it).
"""

import pathlib
import sys
from typing import Any, NamedTuple

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # `python scripts/draw_architecture.py` from anywhere.
from clan_jax.base.errors import UserError  # noqa: E402

Shapes = dict[str, tuple[int, ...]]

DPI = 150
FONT = 7.5  # Points; box titles are one point larger.
LINE = FONT * 1.35 / 72  # Inches per line of text.
GAP = 0.22  # Inches between columns.
PADDING = 0.04  # Inches between a label and its box's edge, at least.
MARGIN = 0.15
LEFT_MIN = 3.3  # Inches left of the first mid column: the key, the fusion and the loss.
# Rows: (centre, height) in inches from the bottom.
ROW_BACKBONE, ROW_CLCA, ROW_CLSA, ROW_HEADS, ROW_CONCAT = (
    (5.35, 0.9), (3.75, 1.2), (2.45, 0.95), (1.3, 0.8), (0.4, 0.5))
BUS_Y = 4.6  # The line that carries T to every CLCA block.
HEIGHT = 5.95
# (face, edge) colours of the box kinds, and the colours of the four kinds of lines.
STYLES = {'backbone': ('#dbe9f6', '#4a7ab0'), 'clca': ('#fde5cc', '#d9822b'),
          'clsa': ('#dcefd9', '#3d9a50'), 'head': ('#ece4f5', '#7a5ea8'),
          'output': ('#eeeeee', '#666666'), 'off': ('#ffffff', '#aaaaaa')}
FEATURE, CONTEXT, SPATIAL, EMBEDDING = '#555555', '#d9822b', '#3d9a50', '#7a5ea8'
SUBSCRIPTS = str.maketrans('0123456789', '₀₁₂₃₄₅₆₇₈₉')


# ------------------------------------------------------------------ shapes from the model

def gather_shapes(model_config: Any, num_classes: int, image_size: int) -> Shapes:
  """Per-image shapes (batch 1) of every tensor the picture names, from jax.eval_shape.

  Keys: 'input', 'stem', 'layer1'..'layer4' (backbone), per mid map N: 'refined/layerN'
  (X_m' after CLCA, or X_m), 'clca/layerN' (A or w), 'clca_width/layerN' (CLCA's q or
  reduced context), 'clca_context/layerN' (global_context's c), 'clsa/layerN' (s_m),
  'z/layerN'; 'clsa/fused' (S), 'top_refined' (T'), 'gap_top', 'concat_in', 'heads/<head>',
  'logits'. Absent: what the config switches off.
  """
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from clan_jax.models.fields import check_image_size
  from clan_jax.models import CLAN, create_model

  check_image_size(image_size, '--image_size')
  model = create_model(model_config, num_classes)
  if isinstance(model, CLAN):  # The picture draws CLCA's textbook order (q, then A v, then out).
    model = model.clone(clca_order='standard')
  if not isinstance(model, CLAN):
    raise UserError("the architecture picture is CLAN's; model.name='resnet' is the plain "
                    'classifier (GAP -> fc). Use --config.model.name=clan.')
  calls = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      calls['/'.join(context.module.path)] = jax.tree.map(lambda a: tuple(a.shape),
                                                          (args[0], out))
    return out

  def forward(images):
    variables = model.init(jax.random.PRNGKey(0), images)
    with nn.intercept_methods(record):
      return model.apply(variables, images, return_attention=True)

  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  outputs = jax.tree.map(lambda a: tuple(a.shape), jax.eval_shape(forward, images))
  return _named_shapes(calls, outputs, model.mid_names)


def _named_shapes(calls: dict, outputs: dict, mid_names) -> Shapes:
  features = calls['backbone'][1]
  shapes = {'input': calls[''][0], 'stem': calls['backbone/layer1_0'][0], **features}
  for name in mid_names:
    clca = calls.get(f'clca_{name}')
    shapes[f'refined/{name}'] = clca[1][0] if clca else features[name]
    if clca:
      shapes[f'clca/{name}'] = clca[1][1]
      width = calls.get(f'clca_{name}/query') or calls[f'clca_{name}/reduce']
      shapes[f'clca_width/{name}'] = width[1]
      if f'clca_{name}/reduce' in calls:
        shapes[f'clca_context/{name}'] = calls[f'clca_{name}/reduce'][0]
    if 'clsa' in outputs:
      shapes[f'clsa/{name}'] = outputs['clsa'][name]
    shapes[f'z/{name}'] = calls[f'heads_{name}'][1][1]
  top = features['layer4']
  if 'clsa' in outputs:
    shapes['clsa/fused'] = outputs['clsa']['fused']
    top = tuple(np.broadcast_shapes(top, shapes['clsa/fused']))  # T' = T (1 + S).
  shapes['top_refined'] = top
  shapes['gap_top'] = calls['fc'][0]
  shapes['concat_in'] = calls['heads_concat'][0]
  shapes.update({f'heads/{head}': logits for head, logits in outputs['heads'].items()})
  shapes['logits'] = outputs['logits']
  return shapes


def dims(shape: tuple[int, ...]) -> str:
  """(1, 56, 56, 512) -> '56×56×512': one image, the batch axis dropped."""
  return '×'.join(str(d) for d in shape[1:])


def sub(name: str) -> str:
  """'layer2' -> '₂', the subscript of a mid map's symbols (X₂, z₂)."""
  return name.removeprefix('layer').translate(SUBSCRIPTS)


# ------------------------------------------------------------------ drawing primitives

class Box(NamedTuple):
  x: float  # Centre.
  y: float
  w: float
  h: float

  @property
  def top(self) -> float:
    return self.y + self.h / 2

  @property
  def bottom(self) -> float:
    return self.y - self.h / 2

  @property
  def left(self) -> float:
    return self.x - self.w / 2

  @property
  def right(self) -> float:
    return self.x + self.w / 2


def text_height(body: str) -> float:
  """Inches taken by a box's title and `body` (approximate: the layout
  check has the last word)."""
  return LINE * (1.1 + (body.count('\n') + 1 if body else 0))


class Diagram:
  """A matplotlib (Agg) canvas in inches, that remembers which label belongs to which box."""

  def __init__(self, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    self.figure = Figure(figsize=(width, height), dpi=DPI, facecolor='white')
    FigureCanvasAgg(self.figure)
    self.ax = self.figure.add_axes((0, 0, 1, 1))
    self.ax.set_xlim(0, width)
    self.ax.set_ylim(0, height)
    self.ax.set_axis_off()
    self.patches = []  # Every box patch.
    self.owned = []  # (text, its box's patch, or None for a free label).

  def box(self, box: Box, title: str, body: str, style: str, dashed: bool = False) -> Box:
    from matplotlib.patches import FancyBboxPatch

    face, edge = STYLES[style]
    patch = FancyBboxPatch((box.left, box.bottom), box.w, box.h, facecolor=face,
                           edgecolor=edge, linewidth=1.0, linestyle='--' if dashed else '-',
                           boxstyle='round,pad=0,rounding_size=0.06', zorder=2)
    self.ax.add_patch(patch)
    self.patches.append(patch)
    top = box.y + text_height(body) / 2  # Title and body as one block, centred in the box.
    self._text(box.x, top, title, patch, va='top', weight='bold', size=FONT + 1)
    if body:
      self._text(box.x, top - LINE * 1.15, body, patch, va='top', linespacing=1.25)
    return box

  def label(self, x: float, y: float, text: str, color: str = '#333333', **kwargs) -> None:
    self._text(x, y, text, None, color=color, **kwargs)

  def _text(self, x, y, text, owner, **kwargs) -> None:
    kwargs = {'ha': 'center', 'size': FONT, 'zorder': 4, **kwargs}
    self.owned.append((self.ax.text(x, y, text, **kwargs), owner))

  def line(self, points, color: str, arrow: bool = True, halo: bool = False) -> None:
    """A polyline through `points`, with an arrow head on its last segment; `halo` draws it
    over a white band, so that it reads as passing over the lines it crosses."""
    from matplotlib import patheffects

    effects = [patheffects.Stroke(linewidth=4, foreground='white'), patheffects.Normal()]
    xs, ys = zip(*points)
    self.ax.plot(xs, ys, color=color, linewidth=1.2, solid_capstyle='butt', zorder=3,
                 path_effects=effects if halo else None)
    if arrow:
      self.ax.annotate('', xy=points[-1], xytext=points[-2], zorder=3,
                       arrowprops=dict(arrowstyle='-|>', color=color, linewidth=1.2,
                                       shrinkA=0, shrinkB=0, mutation_scale=9))

  def panel(self, left: float, bottom: float, right: float, top: float, color: str) -> None:
    """A background that groups boxes; labels may lie on it."""
    from matplotlib.patches import FancyBboxPatch

    self.ax.add_patch(FancyBboxPatch((left, bottom), right - left, top - bottom, facecolor=color,
                                     edgecolor='none', alpha=0.45, zorder=1,
                                     boxstyle='round,pad=0,rounding_size=0.1'))

  def dot(self, x: float, y: float, color: str) -> None:
    self.ax.plot([x], [y], marker='o', markersize=3.5, color=color, zorder=3)


def layout_problems(diagram: Diagram) -> list[str]:
  """Labels that overlap each other, leave their box, cover another box or the canvas."""
  renderer = diagram.figure.canvas.get_renderer()
  canvas = diagram.figure.bbox
  texts = [(text, text.get_window_extent(renderer), owner) for text, owner in diagram.owned]
  problems = []
  for i, (text, extent, owner) in enumerate(texts):
    name = repr(text.get_text().split('\n')[0])
    if not (canvas.x0 <= extent.x0 and extent.x1 <= canvas.x1 and canvas.y0 <= extent.y0
            and extent.y1 <= canvas.y1):
      problems.append(f'{name} leaves the picture')
    if owner is not None and not _inside(extent, owner.get_window_extent(renderer)):
      problems.append(f'{name} leaves its box')
    for patch in diagram.patches:
      if patch is not owner and extent.overlaps(patch.get_window_extent(renderer)):
        problems.append(f'{name} covers another box')
    for other, other_extent, _ in texts[i + 1:]:
      if extent.overlaps(other_extent):
        problems.append(f'{name} overlaps {other.get_text().splitlines()[0]!r}')
  return problems


def _inside(inner, outer) -> bool:
  pad = PADDING * DPI  # Pixels: a label that touches its box's edge reads as cramped.
  return (outer.x0 + pad <= inner.x0 and inner.x1 <= outer.x1 - pad
          and outer.y0 + pad <= inner.y0 and inner.y1 <= outer.y1 - pad)


# ------------------------------------------------------------------ the picture

class Columns(NamedTuple):
  """x extents (left, width) in inches of the backbone's columns, and the picture's width."""
  extents: dict[str, tuple[float, float]]
  width: float

  def centre(self, name: str) -> float:
    left, width = self.extents[name]
    return left + width / 2


def columns(mid_names) -> Columns:
  """Mid maps get wide columns (CLCA, its head below), layer4 the widest (T', CLSA)."""
  widths = {'input': 0.9, 'stem': 1.4}
  widths.update({f'layer{n}': 2.2 if f'layer{n}' in mid_names else 1.2 for n in (1, 2, 3)})
  widths['layer4'] = 2.7
  extents, x = {}, MARGIN
  for name, width in widths.items():
    if name == mid_names[0]:
      x = max(x, MARGIN + LEFT_MIN + GAP)
    extents[name] = (x, width)
    x += width + GAP
  return Columns(extents, x - GAP + MARGIN)


def draw(shapes: Shapes, model_config: Any) -> Diagram:
  mid_names = tuple(f'layer{n}' for n in model_config.mid_stages)
  cols = columns(mid_names)
  diagram = Diagram(cols.width, HEIGHT)
  boxes = draw_backbone(diagram, cols, shapes, model_config.depth, mid_names)
  refined = draw_clca(diagram, cols, shapes, model_config, mid_names, boxes)
  t_prime = draw_top(diagram, cols, shapes, mid_names, boxes, refined)
  heads = draw_heads(diagram, cols, shapes, mid_names, refined, t_prime)
  draw_outputs(diagram, shapes, model_config, heads, mid_names)
  draw_key(diagram, shapes, model_config)
  return diagram


def draw_backbone(diagram, cols, shapes, depth, mid_names) -> dict[str, Box]:
  from clan_jax.models.resnet import ARCHITECTURES

  kind, blocks = ARCHITECTURES[depth]
  y, h = ROW_BACKBONE
  size = shapes['input'][1]
  boxes = {'input': diagram.box(Box(cols.centre('input'), y, cols.extents['input'][1], h),
                                'input', f'image\n{dims(shapes["input"])}', 'backbone')}
  boxes['stem'] = diagram.box(Box(cols.centre('stem'), y, cols.extents['stem'][1], h), 'stem',
                              f'conv7×7/2, max-pool/2\n{dims(shapes["stem"])}', 'backbone')
  for index, name in enumerate(('layer1', 'layer2', 'layer3', 'layer4')):
    width = 1.5 if name == 'layer4' else 1.35 if name in mid_names else cols.extents[name][1]
    role = ' = T' if name == 'layer4' else f' = X{sub(name)}' if name in mid_names else ''
    body = (f'{blocks[index]} {kind} blocks\n{dims(shapes[name])}, '
            f'/{size // shapes[name][1]}')
    boxes[name] = diagram.box(Box(cols.centre(name), y, width, h), name + role, body,
                              'backbone')
  order = ['input', 'stem', 'layer1', 'layer2', 'layer3', 'layer4']
  for left, right in zip(order, order[1:]):
    diagram.line([(boxes[left].right, y), (boxes[right].left, y)], FEATURE)
  return boxes


def draw_clca(diagram, cols, shapes, model_config, mid_names, boxes) -> dict[str, Box]:
  """One CLCA block under each mid map, fed by it (queries) and by T over the bus."""
  y, h = ROW_CLCA
  top = boxes['layer4']
  clca = {}
  for name in mid_names:
    width = cols.extents[name][1]
    box = Box(cols.centre(name), y, width, h)
    if model_config.use_clca:
      diagram.box(box, f'CLCA · {name}  (top → mid)', clca_body(shapes, model_config, name),
                  'clca')
    else:
      diagram.box(box, f'CLCA · {name}: off', "use_clca=False:\n"
                  f"X{sub(name)}' = X{sub(name)}", 'off', dashed=True)
    tap = box.x - 0.4
    diagram.line([(tap, boxes[name].bottom), (tap, box.top)], FEATURE)
    clca[name] = box
  if model_config.use_clca:
    drop = top.x - 0.45
    diagram.line([(drop, top.bottom), (drop, BUS_Y)], CONTEXT, arrow=False)
    diagram.label(drop - 0.06, BUS_Y + 0.06, 'T: keys, values', color=CONTEXT, ha='right',
                  va='bottom')
    leftmost = clca[mid_names[0]].x + 0.5
    diagram.line([(drop, BUS_Y), (leftmost, BUS_Y)], CONTEXT, arrow=False, halo=True)
    for name in mid_names:
      diagram.line([(clca[name].x + 0.5, BUS_Y), (clca[name].x + 0.5, clca[name].top)],
                   CONTEXT)
  return clca


def clca_body(shapes, model_config, name) -> str:
  x, attention = f'X{sub(name)}', shapes[f'clca/{name}']
  width = shapes[f'clca_width/{name}'][-1]
  if model_config.clca_kind == 'global_context':
    context = shapes[f'clca_context/{name}']
    return (f'w = softmax(conv1×1(T)): {dims(attention)}\n'
            f'c = Σ w·T: {dims(context)},  d = {width}\n'
            f"{x}' = {x} + MLP(c), broadcast")
  return (f'q ← {x};  k, v ← T;  d = {width}\n'
          'A = softmax(q·kᵀ / √(d/h))\n'
          f'A: h×|{x}|×|T| = {dims(attention)}\n'
          f"{x}' = {x} + BN(conv1×1(A·v))")


def draw_top(diagram, cols, shapes, mid_names, boxes, refined) -> Box:
  """T' = T (1 + S) under layer4, and CLSA below it, fed by every refined mid map."""
  left, width = cols.extents['layer4']
  has_clsa = 'clsa/fused' in shapes
  t_prime = Box(left + width - 1.0, ROW_CLCA[0], 1.9, 0.6)
  title = "T' = T ⊙ (1 + S)" if has_clsa else "T' = T (CLSA off)"
  diagram.box(t_prime, title, dims(shapes['top_refined']), 'clsa' if has_clsa else 'off')
  top = boxes['layer4']
  diagram.line([(top.x + 0.3, top.bottom), (top.x + 0.3, t_prime.top)], FEATURE)
  y, h = ROW_CLSA
  body = clsa_body(shapes, mid_names) if has_clsa else 'use_clsa=False: S = 0'
  clsa = Box(left + 1.12, y, 2.24, max(h, text_height(body) + 0.25))
  if has_clsa:
    diagram.box(clsa, 'CLSA  (mid → top)', body, 'clsa')
  else:
    diagram.box(clsa, 'CLSA: off', body, 'off', dashed=True)
  diagram.line([(clsa.x, clsa.top), (clsa.x, t_prime.bottom)], SPATIAL)
  if has_clsa:
    diagram.label(clsa.x + 0.07, (clsa.top + t_prime.bottom) / 2,
                  f'S: {dims(shapes["clsa/fused"])}', color=SPATIAL, ha='left', va='center')
  # Each refined mid map branches off to CLSA, the lowest branch from the rightmost map.
  branches = np.linspace(clsa.top - 0.15, clsa.bottom + 0.15, len(mid_names) + 2)[1:-1]
  for name, branch_y in zip(mid_names, branches):
    x = refined[name].x
    diagram.dot(x, branch_y, refined_colour(shapes))
    diagram.line([(x, branch_y), (clsa.left, branch_y)], refined_colour(shapes), halo=True)
  return t_prime


def refined_colour(shapes: Shapes) -> str:
  """The refined mid maps carry T's context, unless CLCA is off."""
  return CONTEXT if any(key.startswith('clca/') for key in shapes) else FEATURE


def clsa_body(shapes, mid_names) -> str:
  maps = [f's{sub(name)}: {dims(shapes[f"clsa/{name}"])}' for name in mid_names]
  pairs = [', '.join(maps[i:i + 2]) for i in range(0, len(maps), 2)]  # Two a line.
  return '\n'.join(["sₘ = σ(conv7×7[mean_c, max_c](Xₘ'))", *pairs,
                    'S = mean of avg-pooled sₘ'])


def draw_heads(diagram, cols, shapes, mid_names, refined, t_prime) -> dict[str, Box]:
  y, h = ROW_HEADS
  heads = {}
  for name in mid_names:
    box = diagram.box(Box(refined[name].x, y, refined[name].w, h), f'head · {name}',
                      f'conv1×1 → BN → ReLU → GAP\n'
                      f'z{sub(name)}: {dims(shapes[f"z/{name}"])} → fc → '
                      f'{dims(shapes[f"heads/{name}"])}', 'head')
    diagram.line([(box.x, refined[name].bottom), (box.x, box.top)], refined_colour(shapes))
    diagram.label(box.x - 0.07, box.top + 0.2, f"X{sub(name)}': "
                  f'{dims(shapes[f"refined/{name}"])}', color=refined_colour(shapes), ha='right',
                  va='center')
    heads[name] = box
  left, width = cols.extents['layer4']
  heads['top'] = diagram.box(Box(left + width - 1.0, y, 1.9, h), 'head · top (fc)',
                             f"GAP(T'): {dims(shapes['gap_top'])}\n"
                             f"→ fc → {dims(shapes['heads/top'])}", 'head')
  x = heads['top'].right - 0.2
  diagram.line([(x, t_prime.bottom), (x, heads['top'].top)], FEATURE)
  y, h = ROW_CONCAT
  first = heads[mid_names[0]]
  concat = Box((first.left + heads['top'].right) / 2, y, heads['top'].right - first.left, h)
  inputs = ', '.join(["GAP(T')"] + [f'z{sub(name)}' for name in mid_names])
  diagram.box(concat, f'head · concat:  fc([{inputs}]: {dims(shapes["concat_in"])}) → '
              f'{dims(shapes["heads/concat"])}', '', 'head')
  for name, box in heads.items():
    diagram.line([(box.x, box.bottom), (box.x, concat.top)], EMBEDDING)
  heads['concat'] = concat
  return heads


def draw_outputs(diagram, shapes, model_config, heads, mid_names) -> None:
  """The fused logits and the loss, left of the heads (the picture reads as a U); both
  take every head, so their arrows leave a panel behind all the heads."""
  start = heads[mid_names[0]].left - 0.1
  diagram.panel(start, heads['concat'].bottom - 0.08, heads['top'].right + 0.08,
                heads['top'].top + 0.08, STYLES['head'][0])
  width = LEFT_MIN - 0.6
  count = sum(1 for key in shapes if key.startswith('heads/'))
  fusion = diagram.box(Box(MARGIN + width / 2, ROW_HEADS[0], width, ROW_HEADS[1]),
                       f"fusion '{model_config.fusion}'",
                       f'{fusion_body(model_config.fusion, count)}\n'
                       f'logits: {dims(shapes["logits"])}', 'output')
  diagram.line([(start, fusion.y), (fusion.right, fusion.y)], EMBEDDING)
  diagram.label((start + fusion.right) / 2, fusion.y + 0.06, "heads' logits", va='bottom',
                color=EMBEDDING)
  weights = model_config.head_loss_weights
  loss = diagram.box(Box(fusion.x, ROW_CONCAT[0], width, ROW_CONCAT[1]), 'loss (training)',
                     f'Σ over heads of w·CE;  w: top {weights["top"]:g}, '
                     f'mid {weights["mid"]:g}, concat {weights["concat"]:g}', 'output')
  diagram.line([(start, loss.y), (loss.right, loss.y)], EMBEDDING)


def fusion_body(fusion: str, count: int) -> str:
  if fusion == 'sum':
    return f'the sum of all {count} heads'
  return f'the {fusion} head alone'


def draw_key(diagram, shapes, model_config) -> None:
  """What the model is, and what the colours of the lines mean."""
  x, y = MARGIN, ROW_CLCA[0] + ROW_CLCA[1] / 2
  size = shapes['input'][1]
  diagram.label(x, y, f'CLAN-R{model_config.depth} · {size}×{size} input · '
                f'K = {shapes["logits"][-1]} classes', ha='left', va='top', weight='bold',
                size=FONT + 1)
  diagram.label(x, y - 0.22, f"clca_kind='{model_config.clca_kind}', "
                f"fusion='{model_config.fusion}'\nshapes per image (H×W×C), from jax.eval_shape "
                'of the model', ha='left', va='top')
  entries = [(FEATURE, 'feature maps'), (CONTEXT, 'top → mid: T into CLCA; refined Xₘ\''),
             (SPATIAL, 'mid → top: CLSA map S rescales T'),
             (EMBEDDING, 'head embeddings and logits')]
  for index, (color, text) in enumerate(entries):
    line_y = y - 0.8 - index * 0.22
    diagram.ax.plot([x, x + 0.35], [line_y, line_y], color=color, linewidth=1.6)
    diagram.label(x + 0.45, line_y, text, ha='left', va='center')


# ------------------------------------------------------------------ command line

def write_picture(model_config: Any, num_classes: int, image_size: int,
                  output: str | pathlib.Path) -> Shapes:
  """Gathers the shapes, draws, checks the layout, writes the PNG; returns the shapes."""
  shapes = gather_shapes(model_config, num_classes, image_size)
  diagram = draw(shapes, model_config)
  diagram.figure.canvas.draw()
  problems = layout_problems(diagram)
  if problems:
    raise UserError('the picture would be garbled, so it was not written: '
                    + '; '.join(problems) + '. Adjust the layout in scripts/draw_architecture.py.')
  save_png(diagram, pathlib.Path(output))
  return shapes


def save_png(diagram: Diagram, output: pathlib.Path) -> None:
  """A 128-colour palette PNG: a third of the RGB file's size, the same to the eye (flat
  fills, anti-aliased text and lines)."""
  from PIL import Image

  pixels = np.asarray(diagram.figure.canvas.buffer_rgba())[..., :3]
  image = Image.fromarray(pixels).quantize(colors=128, method=Image.Quantize.MEDIANCUT,
                                           dither=Image.Dither.NONE)
  output.parent.mkdir(parents=True, exist_ok=True)
  image.save(output, optimize=True)


def main(argv: list[str]) -> None:
  from absl import flags

  from clan_jax.config.config_flag import load_config_flag

  del argv
  flags_ = flags.FLAGS
  config = load_config_flag(flags_.config)
  write_picture(config.model, flags_.num_classes, flags_.image_size, flags_.output)
  print(f'wrote {flags_.output}')


if __name__ == '__main__':
  from absl import flags
  from ml_collections import config_flags

  from clan_jax.base import cli

  config_flags.DEFINE_config_file('config', str(REPO_ROOT / 'configs' / 'default.py'),
                                  'Config file (configs/*.py); its model section is drawn.')
  flags.DEFINE_integer('image_size', 448, 'Input size (a multiple of 32).')
  flags.DEFINE_integer('num_classes', 200, 'Classes K (200: CUB-200-2011).')
  flags.DEFINE_string('output', str(REPO_ROOT / 'docs' / 'images' / 'architecture.png'),
                      'The PNG to write.')
  cli.run(main)
