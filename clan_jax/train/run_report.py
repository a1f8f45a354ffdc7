"""What a training run prints at its end, and when started again once finished: the result in
one line (evaluation.result_line), where the outputs are, and the next commands for its
workdir (docs/TRAINING.md, *The end of a run*)."""

import json
import os
import shlex
from typing import Any, Optional

from clan_jax import datasets
from clan_jax.base.workdirs import shown
from clan_jax.datasets import input_pipeline
from clan_jax.train import checkpoints, distributed
from clan_jax.train.evaluation import result_line
from clan_jax.train.setup import run_length
from clan_jax.viz.attention import missing_attention_maps

RESULTS_FILE = 'eval_results.json'
# A workdir's outputs, in the order outputs_line names those present.
OUTPUT_NAMES = (RESULTS_FILE, 'config.json', 'classes.json', 'run_info.json', 'metrics.jsonl',
                'checkpoints', 'visualizations')
EVENTS_PREFIX = 'events.out.tfevents.'  # TensorBoard's files.


def outputs_line(workdir: str) -> str:
  """'outputs in runs/demo: eval_results.json, ..., checkpoints/, TensorBoard events'."""
  names = set(os.listdir(workdir))
  listed = [name + ('/' if os.path.isdir(os.path.join(workdir, name)) else '')
            for name in OUTPUT_NAMES if name in names]
  if any(name.startswith(EVENTS_PREFIX) for name in names):
    listed.append('TensorBoard events')
  return f'outputs in {shown(workdir)}: {", ".join(listed)}'


def example_image(config: Any) -> Optional[str]:
  """An image file of the eval split when one is known without reading the dataset (a
  'folder' dataset's root/<split>/<class>/<image>), else None."""
  dataset = config.dataset
  if dataset.name != 'folder' or not dataset.root:
    return None
  split = os.path.join(dataset.root, dataset.eval_split.split('[')[0])  # 'test[:50%]': test.
  try:
    for name in sorted(os.listdir(split)):
      folder = os.path.join(split, name)
      files = sorted(f for f in os.listdir(folder) if not f.startswith('.')
                     if os.path.isfile(os.path.join(folder, f)))
      if files:
        return os.path.join(folder, files[0])
  except OSError:  # Moved or never there: the placeholder then.
    pass
  return None


def next_commands(config: Any, workdir: str) -> list[str]:
  """The commands a user runs next on this workdir, each with what it gives."""
  where = shlex.quote(shown(workdir))
  image = example_image(config)
  image_text = shlex.quote(shown(image)) if image else 'IMAGE'
  commands = [(f'python -m clan_jax.predict --workdir={where} {image_text}',
               'top-5 classes of ' + ('this image' if image else 'an image file'))]
  if missing_attention_maps(config.model) is None:
    commands.append((f'python main.py --workdir={where} --mode=visualize --checkpoint=best',
                     'attention figures, best checkpoint'))
  commands += [(f'tensorboard --logdir={where}', 'curves, at http://localhost:6006'),
               (f'python main.py --workdir={where} --mode=eval --checkpoint=best',
                'evaluate the best checkpoint')]
  width = max(len(command) for command, _ in commands)
  return [f'  {command:<{width}}  # {what}' for command, what in commands]


def report_end(config: Any, workdir: str) -> None:
  """The end of a training run, after its result line: outputs and next commands."""
  if distributed.is_main_process():
    print('\n'.join([outputs_line(workdir), 'next:', *next_commands(config, workdir)]),
          flush=True)


def _planned_steps(config: Any) -> Optional[int]:
  """The run's total steps without loading its data (None when the dataset is not built)."""
  if config.num_train_steps > 0:
    return run_length(config, 0)
  try:
    builder = datasets.get_builder(config.dataset)
    if not builder.is_prepared():
      return None
    examples = builder.info.splits[config.dataset.train_split].num_examples
  except Exception:  # Any problem: the full set-up reports it with its own message.
    return None
  return run_length(config, input_pipeline.steps_per_epoch(examples, config.batch_size))


def _latest_step(workdir: str) -> Optional[int]:
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return None
  reader = checkpoints.TrainCheckpointReader(directory)
  try:
    return reader.latest_step()
  finally:
    reader.close()


def _stored_results(workdir: str) -> Optional[dict]:
  try:
    with open(os.path.join(workdir, RESULTS_FILE)) as f:
      results = json.load(f)
    result_line(results)  # Readable as a result, or the run evaluates again.
    return results
  except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
    return None


def _train_again(config: Any, workdir: str) -> str:
  seed = config.seed + 1
  while os.path.exists(f'{workdir}_seed{seed}') and seed < config.seed + 100:
    seed += 1
  other = shlex.quote(shown(f'{workdir}_seed{seed}'))
  return (f'to train again, run the same command with another --workdir, e.g. '
          f'--workdir={other} --config.seed={seed} (another seed)')


def report_if_finished(config: Any, workdir: str) -> Optional[dict]:
  """If `workdir` holds a run trained to the end of this config's steps and evaluated, says
  so (its stored result, where the outputs are, how to train again, the next commands) and
  returns its eval_results.json, changing nothing; else None (train or resume)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isfile(os.path.join(workdir, RESULTS_FILE)):
    return None
  total = _planned_steps(config)
  latest = _latest_step(workdir) if total is not None else None
  results = _stored_results(workdir) if latest is not None and latest >= total else None
  if results is None:
    return None
  if distributed.is_main_process():
    print('\n'.join([
        f'{shown(workdir)} is a finished run (trained to step {latest} of {total}, evaluated): '
        'nothing to train, nothing changed.',
        result_line(results),
        outputs_line(workdir),
        _train_again(config, workdir),
        'next:', *next_commands(config, workdir)]), flush=True)
  return results
