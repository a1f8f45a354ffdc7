"""clan_jax.config.config_flag: an unknown --config.KEY names the full key and the closest
existing dotted keys of any section, in one line."""

from helpers.commands import run_cli

from clan_jax.config.config_keys import closest_keys


def _stderr_line(*overrides: str) -> str:
  result = run_cli('main.py', '--config=configs/demo.py', *overrides, check_returncode=2)
  assert 'Traceback' not in result.stderr, result.stderr
  assert result.stderr.count('\n') == 1, result.stderr  # One line.
  return result.stderr.strip()


def test_a_key_of_another_section_is_suggested_with_its_section():
  assert _stderr_line('--config.learning_rate=0.01') == (
      "error: unknown config key 'learning_rate' (--config.learning_rate=0.01); did you mean "
      'optimizer.learning_rate? --print_config lists every config key with its value and help.')


def test_a_misspelled_key_is_named_and_suggested_with_its_section():
  line = _stderr_line('--config.seed=1', '--config.model.dept=34')
  assert line.startswith("error: unknown config key 'model.dept' (--config.model.dept=34); "
                         'did you mean model.depth? ')
  assert line.endswith('--print_config lists every config key with its value and help.')


def test_a_misspelled_section_is_suggested_whole():
  assert 'did you mean model.depth?' in _stderr_line('--config.modl.depth=34')


def test_closest_keys_looks_at_leaves_in_every_section_and_at_dotted_keys():
  keys = ['batch_size', 'eval_batch_size', 'model.depth', 'optimizer.learning_rate',
          'optimizer.backbone_learning_rate', 'dataset.augment.flip', 'eval.flip']
  assert closest_keys('learning_rate', keys) == ['optimizer.learning_rate']
  assert closest_keys('model.dept', keys) == ['model.depth']
  assert closest_keys('flip', keys) == ['dataset.augment.flip', 'eval.flip']
  assert closest_keys('batchsize', keys)[0] == 'batch_size'
  assert closest_keys('nothing_like_it', keys) == []
