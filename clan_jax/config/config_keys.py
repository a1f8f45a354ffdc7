"""A config's dotted keys and the keys closest to one it does not have (pure Python)."""

import difflib
from typing import Any, Callable

MAX_SUGGESTIONS = 3


def dotted_items(config: Any, is_leaf: Callable[[str], bool] = lambda key: False,
                 prefix: str = '') -> dict[str, Any]:
  """{'optimizer.learning_rate': 0.01, ...} in the config's order; a section (anything with
  items()) is walked unless is_leaf(its dotted key) says it is one field."""
  items = {}
  for name, value in config.items():
    key = prefix + name
    if hasattr(value, 'items') and not is_leaf(key):
      items.update(dotted_items(value, is_leaf, key + '.'))
    else:
      items[key] = value
  return items


def is_known(key: str, keys: list[str]) -> bool:
  """A field, or a section holding fields."""
  return any(k == key or k.startswith(key + '.') for k in keys)


def closest_keys(key: str, keys: list[str]) -> list[str]:
  """The existing dotted keys nearest to `key`: the same or a close leaf in any section
  ('learning_rate' -> 'optimizer.learning_rate'), or a close dotted key ('model.dept')."""
  leaf = key.rsplit('.', 1)[-1]
  by_leaf = {}
  for k in keys:
    by_leaf.setdefault(k.rsplit('.', 1)[-1], []).append(k)
  same_leaf = by_leaf.get(leaf, [])
  close_leaf = [k for name in difflib.get_close_matches(leaf, list(by_leaf), n=MAX_SUGGESTIONS,
                                                        cutoff=0.8) for k in by_leaf[name]]
  close_dotted = difflib.get_close_matches(key, keys, n=MAX_SUGGESTIONS, cutoff=0.8)
  ranked = sorted(dict.fromkeys(close_leaf + close_dotted),
                  key=lambda k: -difflib.SequenceMatcher(None, key, k).ratio())
  return list(dict.fromkeys(same_leaf + ranked))[:MAX_SUGGESTIONS]
