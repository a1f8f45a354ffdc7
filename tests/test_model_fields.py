"""clan_jax.models.fields: the one definition of the model section's fields, which the
configs, the validation, the step benchmark and create_model all follow."""

import dataclasses
import re
import subprocess
import sys
import types

import pytest

from clan_jax.base.errors import ConfigError
from clan_jax.models import fields
from clan_jax.models.fields import FIELDS_ADDED_LATER, ModelConfig
from clan_jax.perf.step_benchmark import MODEL_DEFAULTS
from helpers.commands import REPO_ROOT, run_cli
from configs import default

FIELD_NAMES = [field.name for field in dataclasses.fields(ModelConfig)]


def _loads_no_jax_or_flax(statement):
  code = f"{statement}\nprint(sorted(m for m in ('jax', 'flax') if m in sys.modules))"
  result = subprocess.run([sys.executable, '-c', f'import sys\n{code}'], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)
  assert result.stdout.strip() == '[]', result.stdout


def test_every_field_has_a_help_string():
  for field in dataclasses.fields(ModelConfig):
    assert isinstance(field.metadata.get('help'), str) and field.metadata['help'], field.name


def test_choices_are_the_module_constants_and_include_the_default():
  defaults = ModelConfig()
  expected = {'name': fields.MODEL_NAMES, 'depth': fields.DEPTHS, 'clca_kind': fields.CLCA_KINDS,
              'fusion': fields.FUSIONS, 'dtype': fields.DTYPES,
              'attention_impl': fields.ATTENTION_IMPLS, 'clca_order': fields.CLCA_ORDERS,
              'bn_impl': fields.BN_IMPLS, 'downsample_impl': fields.DOWNSAMPLE_IMPLS,
              'stem_channels': fields.STEM_CHANNELS, 'clsa_impl': fields.CLSA_IMPLS}
  choices = {f.name: f.metadata['choices'] for f in dataclasses.fields(ModelConfig)
             if 'choices' in f.metadata}
  assert choices == expected
  for name, allowed in choices.items():
    assert getattr(defaults, name) in allowed, name


def test_default_config_model_section_is_model_config_defaults():
  model = default.get_model_config()
  assert set(model.keys()) == set(FIELD_NAMES)
  defaults = dataclasses.asdict(ModelConfig())
  for name in FIELD_NAMES:
    value = model[name]
    value = value.to_dict() if hasattr(value, 'to_dict') else value
    assert value == defaults[name] and type(value) is type(defaults[name]), name


def test_step_benchmark_defaults_are_model_config_defaults():
  assert MODEL_DEFAULTS == dataclasses.asdict(ModelConfig())


def test_default_section_round_trips_through_from_section():
  assert ModelConfig.from_section(default.get_model_config()) == ModelConfig()
  assert ModelConfig.from_section(dataclasses.asdict(ModelConfig())) == ModelConfig()
  assert ModelConfig.from_section(ModelConfig()) == ModelConfig()


def test_from_section_normalises_a_json_loaded_section():
  section = {**dataclasses.asdict(ModelConfig()), 'mid_stages': [1, 3], 'unknown': 1}
  config = ModelConfig.from_section(section)  # Extra fields are ignored, as before.
  assert config.mid_stages == (1, 3)


@pytest.mark.parametrize('field', [f for f in FIELD_NAMES if f not in FIELDS_ADDED_LATER])
def test_a_missing_field_is_named(field):
  section = dataclasses.asdict(ModelConfig())
  del section[field]
  with pytest.raises(ConfigError, match=rf'^model\.{field} is missing'):
    ModelConfig.from_section(section)
  with pytest.raises(ConfigError, match=rf'^model\.{field} is missing'):
    ModelConfig.from_section(types.SimpleNamespace(**section))


def test_only_fields_added_later_take_their_default():
  assert FIELDS_ADDED_LATER == {'clca_order', 'bn_impl', 'downsample_impl', 'stem_channels',
                                'clsa_impl'}
  section = dataclasses.asdict(ModelConfig(clca_order='folded'))
  del section['clca_order']  # A run's config.json from before the field.
  assert ModelConfig.from_section(section).clca_order == 'auto'


def test_create_model_accepts_a_section_without_the_fields_added_later():
  from clan_jax.models import create_model
  from clan_jax.models.factory import resolve_form

  section = default.get_model_config()
  for field in FIELDS_ADDED_LATER:
    del section[field]
  model = create_model(section, 5)
  assert model.clca_order == 'auto'
  for field in fields.TODAYS_FORMS:  # create_model resolves 'auto'.
    assert getattr(model, field) == resolve_form(field, 'auto')


@pytest.mark.parametrize('value, shown', [('4', '4'), ('auto', "'auto'")])
def test_stem_channels_takes_a_number_from_the_command_line_or_a_recipe(value, shown):
  result = run_cli('main.py', '--config=configs/demo.py', f'--config.model.stem_channels={value}',
                   '--print_config')  # The int 4 prints as 4, the string '4' would as '4'.
  assert re.search(rf'^  model\.stem_channels +{shown} ', result.stdout, re.MULTILINE)
  model = default.get_model_config()
  model.stem_channels = 8  # A str-typed ConfigDict field would refuse the int.
  assert ModelConfig.from_section(model).stem_channels == 8


def test_create_model_passes_every_field_the_module_declares():
  from clan_jax.models import CLAN, ResNetClassifier, create_model

  config = ModelConfig(depth=18, mid_stages=(1, 3), use_clca=False, clca_kind='global_context',
                       clca_dim=64, clca_heads=2, head_dim=32, fusion='concat', dtype='bfloat16',
                       conv1x1_as_matmul=False, attention_impl='xla', clca_order='folded',
                       bn_impl='custom_vjp', remat=True, downsample_impl='conv', stem_channels=8,
                       clsa_impl='im2col')
  module = create_model(config, 7)
  assert isinstance(module, CLAN) and module.num_classes == 7
  for name in ('depth', 'mid_stages', 'use_clca', 'clca_kind', 'clca_dim', 'clca_heads',
               'head_dim', 'fusion', 'conv1x1_as_matmul', 'attention_impl', 'clca_order',
               'bn_impl', 'remat', 'downsample_impl', 'stem_channels', 'clsa_impl'):
    assert getattr(module, name) == getattr(config, name), name
  assert module.dtype is not None  # 'bfloat16' maps to jnp.bfloat16.
  resnet = create_model(dataclasses.replace(config, name='resnet'), 7)
  assert isinstance(resnet, ResNetClassifier) and (resnet.depth, resnet.remat) == (18, True)
  assert (resnet.bn_impl, resnet.downsample_impl, resnet.stem_channels) == (
      'custom_vjp', 'conv', 8)


def test_fields_and_configs_import_no_jax_or_flax():
  _loads_no_jax_or_flax('import clan_jax.models.fields')
  _loads_no_jax_or_flax("sys.path.insert(0, '.'); import configs.cub; configs.cub.get_config()")
  _loads_no_jax_or_flax('import clan_jax.config.validation, clan_jax.perf.step_benchmark')


def test_models_package_loads_its_heavy_names_on_first_access():
  import clan_jax.models

  assert 'create_model' in dir(clan_jax.models)
  assert callable(clan_jax.models.create_model)
  with pytest.raises(AttributeError, match='no attribute'):
    clan_jax.models.no_such_name  # noqa: B018


def test_auto_dtype_follows_the_platform_and_explicit_dtypes_stay():
  from clan_jax.models.factory import resolve_dtype

  assert ModelConfig().dtype == 'auto'
  assert [resolve_dtype('auto', backend) for backend in ('cpu', 'gpu', 'tpu')] == [
      'float32', 'bfloat16', 'bfloat16']
  for backend in ('cpu', 'gpu'):
    assert resolve_dtype('float32', backend) == 'float32'
    assert resolve_dtype('bfloat16', backend) == 'bfloat16'


def test_create_model_resolves_auto_on_the_present_platform():
  import jax
  import jax.numpy as jnp

  from clan_jax.models import create_model

  expected = None if jax.default_backend() == 'cpu' else jnp.bfloat16  # float32: None.
  assert create_model(ModelConfig(depth=18), 3).dtype == expected
  assert create_model(ModelConfig(depth=18, dtype='float32'), 3).dtype is None


def test_auto_forms_follow_the_platform_and_explicit_forms_stay():
  from clan_jax.models.factory import resolve_form

  assert ModelConfig().bn_impl == ModelConfig().downsample_impl == ModelConfig().clsa_impl == 'auto'
  assert ModelConfig().stem_channels == 'auto'
  for backend in ('gpu', 'cuda', 'rocm'):  # The strided slice kept out of Triton's GEMMs.
    assert resolve_form('downsample_impl', 'auto', backend) == 'conv'
  for field, today in fields.TODAYS_FORMS.items():
    # The CPU keeps today's forms: float32 parity with torch (docs/PARITY.md).
    assert resolve_form(field, 'auto', 'cpu') == today
    assert resolve_form(field, 'auto', 'tpu') == today  # Until measured there.
    assert resolve_form(field, today, 'gpu') == today
  assert [resolve_form('stem_channels', 'auto', b) for b in ('gpu', 'tpu')] == [3, 3]
