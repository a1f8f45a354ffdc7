r"""The ablation: CLAN, CLAN without CLCA, without CLSA, and the plain ResNet, over seeds.

    python -m clan_jax.ablation --config=configs/demo.py --workdir=runs/ablation \
        --seeds=0,1,2 [--variants=clan,no_clca,no_clsa,resnet] [--config.KEY=VALUE ...] [--dry_run]

Each (variant, seed) is one `python main.py` run in workdir/<variant>/seed<S> with the
config's overrides, the variant's and the seed's; its output goes to train.log there. A seed
sets `config.seed` (the initialisation) and `config.dataset.shuffle_seed` (the order of the
examples and every augmentation); the dataset itself (for 'synthetic', its own
`dataset.synthetic.seed`) is the same for every run: it is the benchmark. Runs go seed by
seed (every variant's seed 0 first), so a partial ablation already compares the variants.

Resumption: a run whose eval_results.json exists is skipped, and a stopped one resumes from
its checkpoint (main.py's own resumption), so the same command continues a killed ablation.
Each run's workdir keeps its command in ablation_run.json; a run made with other overrides
is refused rather than mixed into the table. The table (workdir/ablation.md and .json) is
rewritten after every run. SIGTERM or Ctrl-C stops the current run at its next step with a
checkpoint and the ablation with exit status 75 (cli.EXIT_RESUMABLE, like main.py): run the
same command to go on. Progress and the ETA go to stderr.
"""

import os
import shlex
import sys

from absl import flags
from ml_collections import config_flags

from clan_jax.base import cli
from clan_jax.base.errors import UserError
from clan_jax.config.config_flag import explain_flag_error, load_config_flag
from clan_jax.config.validation import validate_training_start
from clan_jax.experiments.ablation_runs import (DEFAULT_VARIANTS, SEED_FIELDS, VARIANTS,
                                                RunFailed, dataset_description, execute,
                                                parse_seeds, parse_variants, plan_runs,
                                                report_progress, user_overrides, write_table)


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  FLAGS = flags.FLAGS
  config = load_config_flag(FLAGS.config)  # A misspelled key fails here, not in run 1.
  validate_training_start(config)  # So does training a real dataset without weights.
  if not FLAGS.workdir:
    raise UserError('--workdir is required: the folder for the runs and the table.')
  seeds, variants = parse_seeds(FLAGS.seeds), parse_variants(FLAGS.variants)
  overrides = user_overrides(sys.argv[1:])
  config_path = config_flags.get_config_filename(FLAGS['config'])
  runs = plan_runs(config_path, FLAGS.workdir, overrides, variants, seeds)
  meta = {'command': ' '.join(['python -m clan_jax.ablation', *map(shlex.quote, sys.argv[1:])]),
          'config': config_path, 'overrides': overrides, 'seeds': seeds,
          'seed_fields': [f'config.{f}' for f in SEED_FIELDS],
          'dataset': dataset_description(config)}
  if FLAGS.dry_run:
    for run in runs:
      print(run.shown_command)
    return 0
  table = lambda: write_table(FLAGS.workdir, runs, variants, meta)  # noqa: E731
  try:
    stopped = execute(runs, on_result=table)
  except RunFailed as e:
    table()
    print(f'error: {e}', file=sys.stderr)
    return e.returncode if e.returncode in (1, 2) else 1
  markdown = table()
  if stopped:
    report_progress(stopped)
    return cli.EXIT_RESUMABLE
  print(markdown)
  report_progress(f'table written to {os.path.join(FLAGS.workdir, "ablation.md")} and ablation.json')
  return 0


def _define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'Configuration file (configs/*.py).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', '', 'Folder of the runs (workdir/<variant>/seed<S>) and the '
                      'table (ablation.md, ablation.json).')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds; each sets ' + ', '.join(
      f'config.{f}' for f in SEED_FIELDS) + '.')
  flags.DEFINE_list('variants', list(DEFAULT_VARIANTS), 'Variants, among ' + ', '.join(VARIANTS)
                    + '.')
  flags.DEFINE_bool('dry_run', False, 'Print the runs\' commands; run nothing.')


def run() -> None:
  """The console command `clan-ablation`."""
  _define_flags()
  cli.run(main, explain_flag_error)


if __name__ == '__main__':
  run()
