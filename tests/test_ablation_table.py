"""clan_jax.experiments.ablation_table: the statistics and the Markdown, on hand-made results."""

import math

import pytest

from clan_jax.experiments import ablation_table


def _result(seed, top1, top=None, steps=400, wall_s=100.0, resumed=False):
  heads = {} if top is None else {'top': top, 'layer2': 0.1, 'concat': 0.2}
  return {'seed': seed, 'top1': top1, 'heads': heads, 'steps': steps, 'wall_s': wall_s,
          'resumed': resumed}


def test_mean_and_sample_std():
  mean, std = ablation_table.mean_and_std([0.5, 0.6, 0.7])
  assert mean == pytest.approx(0.6)
  assert std == pytest.approx(0.1)  # n - 1: sqrt((0.01 + 0 + 0.01) / 2).
  assert ablation_table.mean_and_std([0.4]) == (0.4, None)


def test_summarize_aggregates_the_seeds():
  row = ablation_table.summarize(
      'clan', ['--config.model.name=clan'],
      [_result(0, 0.5, top=0.4, wall_s=90.0), _result(1, 0.7, top=0.6, wall_s=None),
       _result(2, 0.6, top=0.5, wall_s=110.0)], num_seeds=3)
  assert row['top1_mean'] == pytest.approx(0.6) and row['top1_std'] == pytest.approx(0.1)
  assert (row['top1_min'], row['top1_max']) == (0.5, 0.7)
  assert row['top_head_top1_mean'] == pytest.approx(0.5)
  assert row['wall_s_mean'] == pytest.approx(100.0)  # The unknown wall time is left out.
  assert row['steps'] == [400] and [r['seed'] for r in row['runs']] == [0, 1, 2]


def test_summarize_without_heads_or_runs():
  resnet = ablation_table.summarize('resnet', [], [_result(0, 0.3)], num_seeds=3)
  assert resnet['top_head_top1_mean'] is None and resnet['top1_std'] is None
  empty = ablation_table.summarize('no_clca', [], [], num_seeds=3)
  assert 'top1_mean' not in empty and empty['runs'] == []


def test_markdown_lists_every_variant_with_its_numbers():
  rows = [ablation_table.summarize('clan', ['--config.model.use_clca=True'],
                                   [_result(0, 0.5, top=0.4), _result(1, 0.7, top=0.6)], 2),
          ablation_table.summarize('resnet', ['--config.model.name=resnet'],
                                   [_result(0, 0.3, resumed=True)], 2)]
  meta = {'command': 'python -m clan_jax.ablation --config=configs/demo.py', 'config':
          'configs/demo.py', 'overrides': ['--config.num_train_steps=400'], 'seeds': [0, 1],
          'seed_fields': ['config.seed', 'config.dataset.shuffle_seed'],
          'dataset': 'synthetic, dataset.synthetic.seed=0', 'date': '2026-11-27',
          'machine': 'Linux x86_64, 2 CPUs', 'total_wall_s': 300.0}
  ablation_table.add_paired_differences(rows)
  text = ablation_table.render_markdown(rows, meta)
  std = math.sqrt(0.02)
  assert (f'| clan | `--config.model.use_clca=True` | 0.6000 ± {std:.4f} | 0.5000, 0.7000 | - '
          '| 0.5000 | 400 |') in text
  assert ('| resnet | `--config.model.name=resnet` | 0.3000 | 0.3000 | -0.2000 (-0.2000) | - '
          '| 400 |') in text
  assert 'Finished runs: 3 of 4' in text and meta['command'] in text
  assert 'Total wall time of the runs: 5 min 00 s (a resumed run' in text


def test_paired_differences_are_per_seed_against_the_first_variant():
  rows = [ablation_table.summarize('clan', [], [_result(0, 0.5), _result(1, 0.7)], 3),
          ablation_table.summarize('no_clsa', [], [_result(0, 0.55), _result(1, 0.8),
                                                   _result(2, 0.9)], 3)]
  ablation_table.add_paired_differences(rows)
  assert rows[0]['delta_vs_reference'] == [0.0, 0.0]
  assert rows[1]['delta_vs_reference'] == pytest.approx([0.05, 0.1])  # Seed 2: no partner.
  assert rows[1]['delta_mean'] == pytest.approx(0.075)
  assert rows[1]['delta_std'] == pytest.approx(math.sqrt(2 * 0.025 ** 2))
