"""Reading drawn attention figures (clan_jax/viz/figures.py) in tests: the title's colour."""

import numpy as np

from clan_jax.viz import figures


def title_band(figure: np.ndarray) -> np.ndarray:
  """The rows of a figure that hold its title, as int RGB."""
  return np.asarray(figure)[:round(figures.FIGURE_TITLE_INCHES * figures.DPI)].astype(int)


def has_red_title(figure: np.ndarray) -> bool:
  """Red text in the title band (a wrong prediction; the panels' 'jet' red lies below it)."""
  band = title_band(figure)
  return bool(((band[..., 0] > 150) & (band[..., 1] < 80) & (band[..., 2] < 80)).any())
