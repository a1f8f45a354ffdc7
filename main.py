"""The main entry point.

    python main.py --config=configs/cub.py --workdir=runs/cub [--config.KEY=VALUE ...]
    python main.py --config=configs/cub.py --workdir=runs/cub --mode=eval [--checkpoint=best]
    python main.py --config=configs/cub.py --workdir=runs/cub --mode=visualize [--checkpoint=best]

Training resumes from the latest checkpoint in --workdir; --mode=eval evaluates the latest
(or best) checkpoint, or a PyTorch checkpoint given as --config.init.torch_checkpoint, and
writes workdir/eval_results.json; --mode=visualize draws the attention maps of the same
checkpoint over the first eval images into workdir/visualizations/ (docs/VISUALIZE.md).
Invalid flags or config values, and missing dataset files, end with one message and exit
status 2 before anything compiles.
"""

from absl import flags, logging
from ml_collections import config_flags

from clan_jax import cli

config_flags.DEFINE_config_file('config', None, 'Configuration file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', '', 'Directory for checkpoints, metrics and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'visualize'],
                  'Train (and evaluate), only evaluate, or draw the attention maps.')
flags.DEFINE_enum('checkpoint', 'latest', ['latest', 'best'],
                  'With --mode=eval or visualize: which checkpoint of --workdir to use.')
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  config = cli.load_config_flag(FLAGS.config)
  from clan_jax import train  # After validation: importing TF, JAX and clu takes seconds.

  logging.set_verbosity(logging.INFO)
  cli.quiet_library_logs()
  if FLAGS.mode == 'train':
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == 'eval':
    train.evaluate(config, FLAGS.workdir, FLAGS.checkpoint)
  else:
    from clan_jax import visualize

    visualize.visualize(config, FLAGS.workdir, FLAGS.checkpoint)
  return 0


if __name__ == '__main__':
  cli.run(main)
