"""Words for counts in what the commands print: '1 image', '2 images', '1,200 examples'."""


def plural(count: int, noun: str, plural_noun: str = '') -> str:
  """`count` and `noun`, the noun in the plural unless count is 1 (default plural: noun+'s')."""
  word = noun if count == 1 else (plural_noun or noun + 's')
  return f'{count:,} {word}'
