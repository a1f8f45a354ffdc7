"""Files written atomically: a temporary file beside the target, renamed into place, so that a
killed run never leaves a truncated eval_results.json, config.json, record or figure."""

import json
import os
from typing import Any, Callable, Mapping


def write_atomically(path: str, write: Callable[[str], None]) -> None:
  """Calls write(temporary_path), then renames the finished file to `path`."""
  temporary = f'{path}.tmp'
  try:
    write(temporary)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):  # The write failed: leave no stray file.
      os.remove(temporary)


def write_json(content: Mapping[str, Any], path: str) -> None:
  """An indented JSON file with a final newline, written atomically."""

  def write(temporary: str) -> None:
    with open(temporary, 'w') as f:
      json.dump(content, f, indent=2)
      f.write('\n')

  write_atomically(path, write)


def write_png(pixels: Any, path: str) -> None:
  """uint8 RGB pixels (H, W, 3) as a PNG, written atomically."""
  from PIL import Image  # Late: only the figures need Pillow.

  write_atomically(path, lambda temporary: Image.fromarray(pixels).save(
      temporary, format='PNG', optimize=True))
