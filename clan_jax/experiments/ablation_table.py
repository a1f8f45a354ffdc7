"""The ablation's table: per-variant mean, spread and per-seed fused top-1, as Markdown and JSON.

Pure Python (no JAX, no TF): it reads the finished runs' results that `clan_jax.ablation`
collects and is tested without training.
"""

import math
from typing import Any, Mapping, Optional, Sequence

from clan_jax.base.text import format_duration


def mean_and_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
  """The mean and the sample standard deviation (n - 1; None for a single value)."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def summarize(variant: str, overrides: Sequence[str], results: Sequence[Mapping[str, Any]],
              num_seeds: int) -> dict:
  """One table row from the finished runs of one variant (`results`, in seed order).

  Each result holds 'seed', 'top1' (fused), 'heads' ({head: top1}), 'steps', 'wall_s'
  (None when unknown). `num_seeds` is how many seeds were asked for.
  """
  row = {'variant': variant, 'overrides': list(overrides), 'seeds_planned': num_seeds,
         'runs': [dict(r) for r in results]}
  if not results:
    return row
  top1 = [r['top1'] for r in results]
  mean, std = mean_and_std(top1)
  row.update(top1_mean=mean, top1_std=std, top1_min=min(top1), top1_max=max(top1),
             steps=sorted({r['steps'] for r in results}))
  walls = [r['wall_s'] for r in results if r.get('wall_s') is not None]
  row['wall_s_mean'] = sum(walls) / len(walls) if walls else None
  # The top head alone, for CLAN variants: how much of the fused figure is the fusion's.
  top_head = [r['heads']['top'] for r in results if 'top' in r.get('heads', {})]
  row['top_head_top1_mean'] = sum(top_head) / len(top_head) if len(top_head) == len(
      results) else None
  return row


def add_paired_differences(rows: Sequence[dict]) -> None:
  """Adds to each row its per-seed difference in fused top-1 to the first row (the reference).

  A seed fixes the data order and the augmentation for every variant, so the per-seed
  difference leaves out what the seeds share; its spread says whether a gap is noise.
  """
  reference = rows[0]
  by_seed = {r['seed']: r['top1'] for r in reference['runs']}
  for row in rows:
    deltas = [r['top1'] - by_seed[r['seed']] for r in row['runs'] if r['seed'] in by_seed]
    row['reference'] = reference['variant']
    row['delta_vs_reference'] = deltas
    if deltas:
      row['delta_mean'], row['delta_std'] = mean_and_std(deltas)


def _mean_std_cell(row: Mapping[str, Any]) -> str:
  if 'top1_mean' not in row:
    return 'not run yet'
  std = row['top1_std']
  return f'{row["top1_mean"]:.4f} ± {std:.4f}' if std is not None else f'{row["top1_mean"]:.4f}'


def _per_seed_cell(row: Mapping[str, Any]) -> str:
  return ', '.join(f'{r["top1"]:.4f}' for r in row['runs']) or '-'


def _delta_cell(row: Mapping[str, Any]) -> str:
  deltas = row.get('delta_vs_reference')
  if not deltas or row['variant'] == row['reference']:
    return '-'
  return f'{row["delta_mean"]:+.4f} ({", ".join(f"{d:+.4f}" for d in deltas)})'


def render_markdown(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
  """The table with the command, the seeds' meaning and the machine above it."""
  finished = sum(len(r['runs']) for r in rows)
  planned = sum(r['seeds_planned'] for r in rows)
  lines = [
      '# Ablation',
      '',
      f'    {meta["command"]}',
      '',
      f'Config `{meta["config"]}` with '
      f'{"`" + " ".join(meta["overrides"]) + "`" if meta["overrides"] else "no overrides"}; '
      f'seeds {", ".join(map(str, meta["seeds"]))} (each sets {", ".join(meta["seed_fields"])}); '
      f'the dataset is the same for every run ({meta["dataset"]}). '
      f'Finished runs: {finished} of {planned}. Written {meta["date"]} on {meta["machine"]}.',
      '',
      'Fused top-1 on the evaluation split: mean ± sample standard deviation (n - 1) over the '
      f'seeds, each seed\'s value in seed order, and the difference to {rows[0]["variant"]} '
      'with the same seed (mean, then per seed).',
      '',
      f'| variant | overrides | fused top-1 | per seed | vs {rows[0]["variant"]} (same seed) '
      '| top head top-1 (mean) | steps | wall time per run (mean) |',
      '|---|---|---|---|---|---|---|---|',
  ]
  for row in rows:
    top_head = row.get('top_head_top1_mean')
    cells = [row['variant'], f'`{" ".join(row["overrides"])}`', _mean_std_cell(row),
             _per_seed_cell(row), _delta_cell(row),
             '-' if top_head is None else f'{top_head:.4f}',
             ', '.join(map(str, row.get('steps', []))) or '-',
             format_duration(row.get('wall_s_mean')) if row['runs'] else '-']
    lines.append('| ' + ' | '.join(cells) + ' |')
  total = f'Total wall time of the runs: {format_duration(meta.get("total_wall_s"))}'
  if any(r.get('resumed') for row in rows for r in row['runs']):
    total += ' (a resumed run counts its last invocation only)'
  lines += ['', total + '.', '']
  return '\n'.join(lines)
