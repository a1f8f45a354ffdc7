"""Words for counts and durations in what the commands print: '1 image', '2 images',
'1,200 examples', '3 min 05 s'."""

from typing import Optional


def plural(count: int, noun: str, plural_noun: str = '') -> str:
  """`count` and `noun`, the noun in the plural unless count is 1 (default plural: noun+'s')."""
  word = noun if count == 1 else (plural_noun or noun + 's')
  return f'{count:,} {word}'


def format_duration(seconds: Optional[float]) -> str:
  """'42 s', '3 min 05 s', '1 h 02 min'; '?' when unknown."""
  if seconds is None:
    return '?'
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60:02d} s'
  minutes = round(seconds / 60)
  return f'{minutes // 60} h {minutes % 60:02d} min'
