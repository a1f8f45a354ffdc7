"""The words for counts that the commands print."""

from clan_jax.base.text import format_duration, plural


def test_plural_follows_the_count():
  assert plural(1, 'image') == '1 image'
  assert [plural(n, 'image') for n in (0, 2)] == ['0 images', '2 images']
  assert plural(1200, 'example') == '1,200 examples'
  assert (plural(1, 'class', 'classes'), plural(3, 'class', 'classes')) == ('1 class', '3 classes')


def test_format_duration():
  assert [format_duration(s) for s in (None, 42.4, 185, 3725)] == [
      '?', '42 s', '3 min 05 s', '1 h 02 min']
