"""The main entry point: python main.py --config=configs/X.py --workdir=DIR [--mode=train|eval].

Training and evaluation arrive with the Training I issue; until then this parses the
flags, validates the configuration and prints it.
"""

from absl import flags
from ml_collections import config_flags

from clan_jax import cli

config_flags.DEFINE_config_file('config', None, 'Configuration file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', '', 'Directory for checkpoints, logs and metrics.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'What to run.')
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  config = cli.load_config_flag(FLAGS.config)
  print(config.to_json_best_effort(indent=2))
  print(f'configuration valid. --mode={FLAGS.mode} is not implemented yet: training and '
        'evaluation arrive with the Training I issue (see README).')
  return 0


if __name__ == '__main__':
  cli.run(main)
