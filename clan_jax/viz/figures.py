"""Attention figures, drawn: each CLSA map, the fused map and CLCA rows over the input image.

    python main.py --config=configs/demo.py --workdir=runs/demo --mode=visualize [--checkpoint=best]

writes one PNG per image, `workdir/visualizations/step_<N>/image_<i>.png` (N: the checkpoint's
step; `visualizations/torch/` for init.torch_checkpoint), where image i is the i-th example of
the eval split (`visualize.num_images` of them). During training, with
`visualize.every_eval`, the same figures go to TensorBoard at each evaluation as
`attention/image_<i>`. Layout of a figure (one row; docs/VISUALIZE.md):

    input | CLSA layerN (each mid map) | CLSA fused | CLCA layerN row at (r, c) (each mid map)

Every map is upsampled to the image size by nearest neighbour (a map cell becomes a block
of pixels, so the map's true resolution stays visible) and overlaid on the image in the
'jet' colour map, scaled to the panel's own min..max, which the panel's title gives. The
CLCA panel shows where the query position (`visualize.query_position`, a fraction of the
mid map) looks in the top map, averaged over attention heads; for clca_kind=
'global_context' it shows the pooling weights over the top map (one per mid map, the same
for every position). The query is marked with a white cross on its mid map's panels. The
figure's title gives the true and the predicted (fused) class.

The figure functions are pure (numpy in, uint8 RGB (H, W, 3) out); matplotlib (its Agg
canvas, no pyplot) is imported only when a figure is drawn.
"""

from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np

TOP_STRIDE = 32  # layer4's stride: the top map is (H / 32, W / 32).
ALPHA = 0.5  # Weight of the colour-mapped attention over the image.
COLORMAP = 'jet'
PANEL_INCHES, DPI = 2.0, 100  # Each panel about 200 px wide, whatever the image size.


class Panel(NamedTuple):
  """One panel of a figure: its title, its pixels and an optional marker (x, y) in pixels."""
  title: str
  pixels: np.ndarray  # uint8 (H, W, 3)
  marker: Optional[tuple[float, float]] = None


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

  values = upsample_nearest(np.squeeze(values), image.shape[:2])
  low, high = float(values.min()), float(values.max())
  scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
  colours = colormaps[COLORMAP](scaled)[..., :3] * 255.0
  blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
  return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def _range(values: np.ndarray) -> str:
  return f'{float(np.min(values)):.3g}..{float(np.max(values)):.3g}'


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
    panels.append(Panel(f'CLSA {name}\n{_range(clsa[name])}', overlay(image, clsa[name]), marker))
  for name in mid_names if clca else []:
    row = np.asarray(clca[name]).reshape(top_shape)
    if clca_kind == 'cross_attention':
      mid_shape = (size[0] // stage_stride(name), size[1] // stage_stride(name))
      title = f'CLCA {name} row at {query_cell(query_position, mid_shape)}'
    else:
      title = f'CLCA {name} pooling weights'
    panels.append(Panel(f'{title}\n{_range(row)}', overlay(image, row),
                        markers[name] if shows_query else None))
  return panels


def render(panels: Sequence[Panel], title: str) -> np.ndarray:
  """Panels side by side under a title -> uint8 RGB (H, W, 3); the size depends only on
  the number of panels (TensorBoard needs a fixed size per image key)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # Late: loaded only to draw.
  from matplotlib.figure import Figure  # Late: matplotlib only when a figure is drawn.

  figure = Figure(figsize=(PANEL_INCHES * len(panels), PANEL_INCHES + 0.6), dpi=DPI)
  canvas = FigureCanvasAgg(figure)
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  for ax, panel in zip(axes, panels):
    ax.imshow(panel.pixels)  # Antialiased where the panel is smaller than the image.
    ax.set_title(panel.title, fontsize=7)
    ax.set_axis_off()
    if panel.marker is not None:
      ax.plot(*panel.marker, marker='+', color='white', markersize=10, markeredgewidth=2)
  figure.suptitle(title, fontsize=9)
  figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.74, wspace=0.06)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def attention_figures(images: np.ndarray, labels: np.ndarray, outputs: Mapping[str, Any],
                      class_names: Sequence[str], mid_names: Sequence[str],
                      query_position: Sequence[float],
                      clca_kind: str = 'cross_attention') -> list[np.ndarray]:
  """A batch and the model's outputs -> one figure per image, uint8 RGB (H, W, 3).

  `images`: uint8 (B, S, S, 3), as the eval pipeline gives them (before normalisation);
  `outputs`: {'logits': (B, K), 'clsa': {...: (B, h, w, 1)}, 'clca': {...: (B, h_t w_t)
  rows or pooling weights, or the full (B, heads, mid, top) attention}}, as numpy.
  """
  figures = []
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
    predicted = int(np.argmax(outputs['logits'][i]))
    title = (f'image {i}: true {class_names[int(labels[i])]}, '
             f'predicted {class_names[predicted]}')
    figures.append(render(panels, title))
  return figures
