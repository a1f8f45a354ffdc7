"""Attention figures, drawn: each CLSA map, the fused map and CLCA rows over the input image.

    python main.py --config=configs/demo.py --workdir=runs/demo --mode=visualize [--checkpoint=best]
    python -m clan_jax.predict --workdir=runs/demo --figures=DIR IMAGE ...

write one PNG per image: `workdir/visualizations/step_<N>/image_<i>.png` (N: the checkpoint's
step; `visualizations/torch/` for init.torch_checkpoint), where image i is the i-th example of
the eval split (`visualize.num_images` of them), or `DIR/<image name>_attention.png` for
image files. During training, with `visualize.every_eval`, the same figures go to
TensorBoard at each evaluation as `attention/image_<i>`. Layout of a figure (one row;
docs/VISUALIZE.md):

    input | CLSA layerN (each mid map) | CLSA fused | CLCA layerN row at (r, c) (each mid map)

Every map is upsampled to the image size by nearest neighbour (a map cell becomes a block
of pixels, so the map's true resolution stays visible) and overlaid on the image in the
'jet' colour map, scaled to the panel's own min..max: the colour bar under the panel, labelled
with that min and max (range_labels: '0.0' and '1.0', not '1.09e-33' and '1'). The CLCA
panel shows where the query position (`visualize.query_position`, a fraction of the mid map)
looks in the top map, averaged over attention heads; for clca_kind='global_context' it shows
the pooling weights over the top map (one per mid map, the same for every position). The
query is marked with a white cross on its mid map's panels. The figure's title gives the
predicted (fused) class with its probability and, when it is known, the true class; a wrong
prediction is titled 'WRONG' in red (figure_title).

The figure functions are pure (numpy in, uint8 RGB (H, W, 3) out); matplotlib (its Agg
canvas, no pyplot) is imported only when a figure is drawn.
"""

import math
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np

TOP_STRIDE = 32  # layer4's stride: the top map is (H / 32, W / 32).
ALPHA = 0.5  # Weight of the colour-mapped attention over the image.
COLORMAP = 'jet'
PANEL_INCHES, DPI = 2.0, 100  # Each panel 200 px wide, whatever the image size.
PANEL_MARGIN_INCHES = 0.05  # Around each panel's image.
FIGURE_TITLE_INCHES, PANEL_TITLE_INCHES = 0.3, 0.2  # Above the panels.
# Below each map panel: its colour bar (a fraction of the panel's width) and its labels.
COLOUR_BAR_INCHES, COLOUR_BAR_GAP_INCHES, COLOUR_BAR_HEIGHT_INCHES = 0.3, 0.02, 0.08
COLOUR_BAR_WIDTH = 0.8
TITLE_COLOUR, WRONG_COLOUR = 'black', '#c00000'


class Panel(NamedTuple):
  """One panel of a figure: its title, its pixels, an optional marker (x, y) in pixels and,
  for a map, its (min, max): the ends of its colour bar."""
  title: str
  pixels: np.ndarray  # uint8 (H, W, 3)
  marker: Optional[tuple[float, float]] = None
  value_range: Optional[tuple[float, float]] = None


# --------------------------------------------------------------------------- positions

def stage_stride(name: str) -> int:
  """layerN's stride relative to the input: layer1 4, layer2 8, layer3 16, layer4 32."""
  return 2 ** (int(name.removeprefix('layer')) + 1)


def query_cell(fraction: Sequence[float], map_shape: Sequence[int]) -> tuple[int, int]:
  """(row, col) fractions in [0, 1] -> the map cell that holds them (1.0: the last one)."""
  return tuple(min(int(f * n), n - 1) for f, n in zip(fraction, map_shape))


def cell_centre(cell: Sequence[int], map_shape: Sequence[int],
                image_shape: Sequence[int]) -> tuple[float, float]:
  """The centre of a map cell in image pixel coordinates (x, y), as imshow places pixels."""
  row, col = cell
  return ((col + 0.5) * image_shape[1] / map_shape[1] - 0.5,
          (row + 0.5) * image_shape[0] / map_shape[0] - 0.5)


def clca_row(attention, query_index: int):
  """CLCA's output for one query: a cross-attention tensor (B, heads, mid, top) -> row
  `query_index` averaged over heads, (B, top); pooling weights (B, top) pass unchanged.
  numpy or jax arrays (it runs inside the jitted forward pass, which then returns a row
  rather than the whole attention matrix)."""
  if attention.ndim == 2:
    return attention
  return attention[:, :, query_index, :].mean(axis=1)


# ------------------------------------------------------------------------------ pixels

def as_2d_map(values: np.ndarray) -> np.ndarray:
  """An (h, w) map from (h, w), (h, w, 1) or (1, h, w[, 1]): size-1 batch and channel axes
  dropped, never h or w (np.squeeze would turn a 1x1 map, a 32 px image's top map, into a
  scalar)."""
  values = np.asarray(values)
  if values.ndim == 4 and values.shape[0] == 1:  # (1, h, w, 1)
    values = values[0]
  if values.ndim == 3 and values.shape[-1] == 1:  # (h, w, 1)
    values = values[..., 0]
  if values.ndim == 3 and values.shape[0] == 1:  # (1, h, w)
    values = values[0]
  if values.ndim != 2:
    raise ValueError(f'an attention map must be (h, w), got shape {values.shape}')
  return values


def upsample_nearest(values: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  """A (h, w) map -> (H, W), each output pixel taking the map cell it lies in."""
  values = np.asarray(values, np.float32)
  rows = np.arange(shape[0]) * values.shape[0] // shape[0]
  cols = np.arange(shape[1]) * values.shape[1] // shape[1]
  return values[rows[:, None], cols[None, :]]


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
  """uint8 (H, W, 3) image and an (h, w) map -> uint8 (H, W, 3): the map, scaled to its own
  min..max and colour-mapped, blended over the image (a constant map shows as its low end)."""
  from matplotlib import colormaps  # Late: matplotlib only when a figure is drawn.

  values = upsample_nearest(as_2d_map(values), image.shape[:2])
  low, high = float(values.min()), float(values.max())
  scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
  colours = colormaps[COLORMAP](scaled)[..., :3] * 255.0
  blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
  return np.clip(np.round(blended), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- ranges

def _display_value(value: float, decimals: int) -> str:
  text = f'{value:.{decimals}f}'
  return text[1:] if text.startswith('-') and float(text) == 0 else text  # No '-0.00'.


def range_labels(low: float, high: float) -> tuple[str, str]:
  """A map's min and max as text to read at a glance: to the decimal that gives the range's
  width two significant digits, so that values far below it read 0 ('0.0', '1.0' for a
  sigmoid map from 1.09e-33 to 1; '0.0012', '0.0051' for an attention row); widths under
  1e-4 in scientific notation ('3.2e-07', '5.1e-06'). A constant map takes its value's
  magnitude instead of the width."""
  low, high = float(low), float(high)
  if not (math.isfinite(low) and math.isfinite(high)):
    return f'{low:.2g}', f'{high:.2g}'  # 'nan', 'inf': a diverged model, shown as it is.
  scale = (high - low) if high > low else max(abs(low), abs(high))
  if scale == 0:
    return '0', '0'
  exponent = math.floor(math.log10(scale))
  if exponent < -4:
    # Below half the last digit shown: 0, not a residue such as 1.1e-33.
    tiny = 0.05 * 10.0 ** exponent
    return tuple(f'{v:.1e}' if abs(v) >= tiny else '0' for v in (low, high))
  decimals = max(0, 1 - exponent)
  return _display_value(low, decimals), _display_value(high, decimals)


def format_range(low: float, high: float) -> str:
  """'0.0..1.0': range_labels joined."""
  return '..'.join(range_labels(low, high))


def _map_panel(title: str, image: np.ndarray, values: np.ndarray,
               marker: Optional[tuple[float, float]]) -> Panel:
  values = np.asarray(values, np.float32)
  return Panel(title, overlay(image, values), marker,
               (float(np.min(values)), float(np.max(values))))


def example_panels(image: np.ndarray, clsa: Mapping[str, np.ndarray],
                   clca: Mapping[str, np.ndarray], mid_names: Sequence[str],
                   query_position: Sequence[float],
                   clca_kind: str = 'cross_attention') -> list[Panel]:
  """The panels of one image: input, CLSA per mid map, CLSA fused, CLCA per mid map.

  `clsa`: {'layerN': (h, w[, 1]), 'fused': (h_t, w_t[, 1])} (empty without CLSA);
  `clca`: {'layerN': (h_t w_t,)} rows (clca_row) or pooling weights (empty without CLCA).
  """
  size = image.shape[:2]
  top_shape = (size[0] // TOP_STRIDE, size[1] // TOP_STRIDE)
  panels = [Panel('input', image)]
  markers = {}
  for name in mid_names:
    mid_shape = (size[0] // stage_stride(name), size[1] // stage_stride(name))
    markers[name] = cell_centre(query_cell(query_position, mid_shape), mid_shape, size)
  shows_query = bool(clca) and clca_kind == 'cross_attention'
  for name in [*mid_names, 'fused'] if clsa else []:
    marker = markers.get(name) if shows_query else None
    panels.append(_map_panel(f'CLSA {name}', image, clsa[name], marker))
  for name in mid_names if clca else []:
    row = np.asarray(clca[name]).reshape(top_shape)
    if clca_kind == 'cross_attention':
      mid_shape = (size[0] // stage_stride(name), size[1] // stage_stride(name))
      title = f'CLCA {name} row at {query_cell(query_position, mid_shape)}'
    else:
      title = f'CLCA {name} pooling weights'
    panels.append(_map_panel(title, image, row, markers[name] if shows_query else None))
  return panels


# ------------------------------------------------------------------------------ figure

def figure_title(name: str, predicted: str, probability: float,
                 true: Optional[str] = None) -> tuple[str, str]:
  """A figure's title and its colour: the prediction, and the true class when it is known;
  a wrong prediction says so in words and in red ('image 3: WRONG: predicted wren (0.93),
  true finch')."""
  text = f'{name}: predicted {predicted} ({probability:.2f})'
  if true is None:
    return text, TITLE_COLOUR
  if true != predicted:
    return f'{name}: WRONG: predicted {predicted} ({probability:.2f}), true {true}', WRONG_COLOUR
  return f'{text}, true {true}', TITLE_COLOUR


def figure_size(num_panels: int) -> tuple[float, float]:
  """(width, height) in inches: it depends only on the number of panels (TensorBoard needs
  a fixed size per image key)."""
  height = FIGURE_TITLE_INCHES + PANEL_TITLE_INCHES + PANEL_INCHES + COLOUR_BAR_INCHES
  return PANEL_INCHES * num_panels, height


def colour_bar_box(index: int, num_panels: int) -> tuple[int, int, int, int]:
  """Panel `index`'s colour bar in the drawn figure's pixels: (left, top, right, bottom)."""
  height = figure_size(num_panels)[1]
  left = (index + (1 - COLOUR_BAR_WIDTH) / 2) * PANEL_INCHES
  top = height - COLOUR_BAR_INCHES + COLOUR_BAR_GAP_INCHES
  return (round(left * DPI), round(top * DPI),
          round((left + COLOUR_BAR_WIDTH * PANEL_INCHES) * DPI),
          round((top + COLOUR_BAR_HEIGHT_INCHES) * DPI))


def _colour_bar(cax: Any, value_range: tuple[float, float]) -> None:
  """The panel's colour map from its min (left) to its max (right), labelled at both ends."""
  cax.imshow(np.linspace(0.0, 1.0, 256)[None, :], cmap=COLORMAP, aspect='auto',
             extent=(0.0, 1.0, 0.0, 1.0), interpolation='nearest')
  cax.set_yticks([])
  cax.set_xticks([0.0, 1.0], labels=range_labels(*value_range))
  cax.tick_params(axis='x', labelsize=6, length=2, pad=1)
  low, high = cax.get_xticklabels()
  low.set_horizontalalignment('left')  # Both labels inside the panel's width.
  high.set_horizontalalignment('right')


def render(panels: Sequence[Panel], title: str, title_colour: str = TITLE_COLOUR) -> np.ndarray:
  """Panels side by side under a title -> uint8 RGB (H, W, 3), each map panel with its colour
  bar below it; the size depends only on the number of panels (figure_size)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # Late: loaded only to draw.
  from matplotlib.figure import Figure  # Late: matplotlib only when a figure is drawn.

  width, height = figure_size(len(panels))
  figure = Figure(figsize=(width, height), dpi=DPI)
  canvas = FigureCanvasAgg(figure)
  side = PANEL_INCHES - 2 * PANEL_MARGIN_INCHES
  for i, panel in enumerate(panels):
    ax = figure.add_axes([(i * PANEL_INCHES + PANEL_MARGIN_INCHES) / width,
                          (COLOUR_BAR_INCHES + PANEL_MARGIN_INCHES) / height, side / width,
                          side / height])
    ax.imshow(panel.pixels)  # Antialiased where the panel is smaller than the image.
    ax.set_title(panel.title, fontsize=7, pad=3)
    ax.set_axis_off()
    if panel.marker is not None:
      ax.plot(*panel.marker, marker='+', color='white', markersize=10, markeredgewidth=2)
    if panel.value_range is not None:
      left, top, right, lower = colour_bar_box(i, len(panels))
      cax = figure.add_axes([left / DPI / width, 1 - lower / DPI / height,
                             (right - left) / DPI / width, (lower - top) / DPI / height])
      _colour_bar(cax, panel.value_range)
  figure.suptitle(title, fontsize=9, color=title_colour,
                  y=1 - 0.5 * FIGURE_TITLE_INCHES / height, va='center')
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def softmax(logits: np.ndarray) -> np.ndarray:
  """Class probabilities of (..., K) logits, in float64."""
  shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
  exponentials = np.exp(shifted)
  return exponentials / exponentials.sum(axis=-1, keepdims=True)


def attention_figures(images: np.ndarray, labels: Optional[Sequence[Optional[int]]],
                      outputs: Mapping[str, Any], class_names: Sequence[str],
                      mid_names: Sequence[str], query_position: Sequence[float],
                      clca_kind: str = 'cross_attention',
                      names: Optional[Sequence[str]] = None) -> list[np.ndarray]:
  """A batch and the model's outputs -> one figure per image, uint8 RGB (H, W, 3): the one
  drawing of --mode=visualize, training's figures and `clan_jax.predict --figures`.

  `images`: uint8 (B, S, S, 3), as the eval pipeline gives them (before normalisation);
  `labels`: the true class of each image, None (or negative) where it is unknown, or None
  for all; `outputs`: {'logits': (B, K), 'clsa': {...: (B, h, w, 1)}, 'clca': {...:
  (B, h_t w_t) rows or pooling weights, or the full (B, heads, mid, top) attention}}, as
  numpy; `names`: each figure's name in its title (default 'image <i>').
  """
  figures = []
  probabilities = softmax(outputs['logits'])
  for i, image in enumerate(np.asarray(images)):
    clsa = {name: np.asarray(maps[i]) for name, maps in outputs.get('clsa', {}).items()}
    clca = {}
    for name, attention in outputs.get('clca', {}).items():
      if np.ndim(attention) == 4:
        mid_shape = [n // stage_stride(name) for n in image.shape[:2]]
        row, col = query_cell(query_position, mid_shape)
        attention = clca_row(np.asarray(attention), row * mid_shape[1] + col)
      clca[name] = np.asarray(attention[i])
    panels = example_panels(image, clsa, clca, mid_names, query_position, clca_kind)
    predicted = int(np.argmax(probabilities[i]))
    label = None if labels is None or labels[i] is None or labels[i] < 0 else int(labels[i])
    title, colour = figure_title(names[i] if names else f'image {i}', class_names[predicted],
                                 float(probabilities[i, predicted]),
                                 None if label is None else class_names[label])
    figures.append(render(panels, title, colour))
  return figures
