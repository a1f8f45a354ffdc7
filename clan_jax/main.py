"""Command: train, evaluate, or draw the attention maps of a run (`python main.py`, `clan-train`).

    python main.py --config=configs/cub.py --workdir=runs/cub [--config.KEY=VALUE ...]
    python main.py --workdir=runs/cub --mode=eval [--checkpoint=best]
    python main.py --workdir=runs/cub --mode=visualize [--checkpoint=best]
    python main.py --config=configs/cub.py --workdir=runs/cub --mode=preflight

Training resumes from the latest checkpoint in --workdir; a run trained to its end and
evaluated is only reported again, with its next commands (clan_jax/train/run_report.py).
--mode=eval and --mode=visualize read the run's config.json unless --config (with its
--config.KEY overrides) is given. --mode=eval evaluates what
--checkpoint names (latest or best of --workdir, or PATH: a variables checkpoint or a PyTorch
file of the whole model; default: the latest, or init.torch_checkpoint when it is a whole
model, torch_backbone_only=False) and writes workdir/eval_results.json; --mode=visualize
draws the attention maps of the same weights over the first eval images into
workdir/visualizations/ (docs/VISUALIZE.md); --mode=preflight checks, in minutes on a CPU, the
splits against the official figures, the weights and the input pipeline on ImageNet's classes,
and times a few training steps to project the run's time (clan_jax/perf/preflight.py); a failed
check ends with `error: preflight failed: ...` and exit status 1 (docs/TRAINING.md, Preflight).
Invalid flags or config values, and missing dataset files, end with one message and exit
status 2 before anything compiles. Exit status 0: finished; 75 (cli.EXIT_RESUMABLE): SIGTERM or
SIGINT stopped training after saving a checkpoint, run the same command to resume (a requeue
loop or script: docs/TRAINING.md, Signals and exit status).

Several processes (hosts) run the same command with --distributed (SLURM, Open MPI, Cloud
TPU: detected) or with --coordinator_address, --num_processes and --process_id
(clan_jax/train/distributed.py; docs/TRAINING.md).
"""

import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from clan_jax.base import cli, workdirs
from clan_jax.config import print_config
from clan_jax.config.config_flag import explain_flag_error, load_config_flag, loaded_config
from clan_jax.config.validation import validate_config, validate_training_start
from clan_jax.train import distributed, workdir_lock

config_flags.DEFINE_config_file('config', None, 'Configuration file (configs/*.py); '
                                "--mode=eval and visualize read --workdir's config.json "
                                'without it.', lock_config=True)
flags.DEFINE_bool('print_config', False, 'Print every key of the config (after the --config.KEY '
                  'overrides) with its value and help, then exit.')
flags.DEFINE_string('workdir', '', 'Directory for checkpoints, metrics and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'visualize', 'preflight'],
                  'Train (and evaluate), only evaluate, draw the attention maps, or check the '
                  'data, weights and step time before training.')
flags.DEFINE_string('checkpoint', '', 'With --mode=eval or visualize. ' + cli.CHECKPOINT_HELP +
                    ' Default: latest (or a whole-model init.torch_checkpoint).')
flags.DEFINE_bool('distributed', False,
                  'Join a job of several processes, reading it from the environment: '
                  f'{distributed.DETECTED}. Flags below override what is read.')
flags.DEFINE_string('coordinator_address', '',
                    'HOST:PORT of process 0, which the other processes connect to.')
flags.DEFINE_integer('num_processes', None, 'Processes in the job (with --coordinator_address).')
flags.DEFINE_integer('process_id', None, "This process's id, 0 to num_processes - 1.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.print_config:  # Before validation: the list helps to fix an invalid value.
    print(print_config.format_config(loaded_config(FLAGS.config)))
    return 0
  if FLAGS['checkpoint'].present and FLAGS.mode in ('train', 'preflight'):
    cli.fail('--checkpoint chooses what --mode=eval or --mode=visualize reads; training always '
             'resumes from the latest checkpoint of --workdir. Drop --checkpoint, or add '
             '--mode=eval.')
  launch = distributed.launch_from_flags(FLAGS.distributed, FLAGS.coordinator_address,
                                         FLAGS.num_processes, FLAGS.process_id)
  config = _load_config()
  if FLAGS.mode == 'train':  # Training's own rule: ImageNet weights on real data.
    validate_training_start(config)
  # Before TensorFlow and JAX load: one line in a fraction of a second (train.setup_run
  # checks them again for library callers).
  if not FLAGS.workdir:
    cli.fail('--workdir is required: the folder for checkpoints, metrics and results.')
  if FLAGS.mode == 'train':
    workdirs.check_training_workdir(FLAGS.workdir)  # Not `runs` for `runs/demo`.
  logging.set_verbosity(logging.INFO)
  distributed.initialize(launch)  # Before anything creates a JAX backend.
  if FLAGS.mode == 'train' and distributed.is_main_process():  # At once, before TensorFlow.
    workdir_lock.refuse_if_in_use(os.path.expanduser(FLAGS.workdir))
  # After validation: importing TensorFlow, JAX and clu takes seconds.
  from clan_jax.inference import run_modes
  from clan_jax.perf import preflight
  from clan_jax.train import loop

  if not distributed.is_main_process():  # Process 0 reports progress; the others, problems.
    logging.set_verbosity(logging.WARNING)
  workdir = os.path.expanduser(FLAGS.workdir)  # The shell leaves the ~ of --workdir=~/x.
  if FLAGS.mode == 'train':
    try:
      loop.train_and_evaluate(config, workdir)
    except loop.StoppedBySignal:  # Checkpoint saved: the scheduler should rerun the command.
      return cli.EXIT_RESUMABLE
  elif FLAGS.mode == 'preflight':
    try:
      preflight.run_preflight(config, workdir)
    except preflight.PreflightError as e:  # A failed check (cli: exit status 1), not a usage error.
      print(f'error: {e}', file=sys.stderr)
      return 1
  elif FLAGS.mode == 'eval':
    run_modes.evaluate_run(config, workdir, FLAGS.checkpoint or None)
  else:
    run_modes.visualize_run(config, workdir, FLAGS.checkpoint or None)
  return 0


def _load_config():
  """--config, validated; for --mode=eval or visualize without it, the run's config.json."""
  if FLAGS.config is not None or FLAGS.mode not in ('eval', 'visualize'):
    return load_config_flag(FLAGS.config)
  if not FLAGS.workdir:
    cli.fail(f'--mode={FLAGS.mode} needs --workdir, a training workdir (its config.json is '
             'the config unless --config is given).')
  config = workdirs.read_run_config(FLAGS.workdir)
  validate_config(config)
  return config


def run() -> None:
  """`python main.py` and the console command `clan-train`."""
  cli.run(main, explain_flag_error)


if __name__ == '__main__':
  run()
