"""`python main.py --mode=eval` and `--mode=visualize`: a run's model evaluated on the eval
split (eval_results.json), or its attention figures drawn (workdir/visualizations/), from the
variables that --checkpoint names (clan_jax/inference/model_source.py)."""

import os
from typing import Any, Optional

from clan_jax.base.errors import UserError
from clan_jax.config.validation import validate_config
from clan_jax.inference.model_source import (LoadedVariables, evaluation_choice,
                                             load_inference_variables)
from clan_jax.train import checkpoints, sharding, workdir_lock
from clan_jax.train.evaluation import (checkpoint_selection, compile_eval_step, eval_scalars,
                                       report_results, run_evaluation)
from clan_jax.train.metric_writer import METRICS_FILE, create_metric_writer
from clan_jax.train.run_report import outputs_line
from clan_jax.train.setup import Run, setup_run, write_run_files
from clan_jax.viz.attention import AttentionFigures, missing_attention_maps


def run_variables(run: Run, checkpoint: Optional[str]) -> LoadedVariables:
  """The variables --checkpoint names for this run's model, replicated over its mesh."""
  config = run.config
  return load_inference_variables(
      evaluation_choice(config, checkpoint), run.model, image_size=config.dataset.crop_size,
      sharding=sharding.replicated_sharding(run.mesh), workdir=run.workdir,
      allowed_globals=[g for g in config.init.allowed_globals.split(',') if g])


def evaluate_run(config: Any, workdir: str, checkpoint: Optional[str] = None) -> dict:
  """Evaluates what --checkpoint names (default: the workdir's latest checkpoint) and writes
  workdir/eval_results.json (beside a running training, which owns that file and config.json:
  eval_results.<checkpoint>-step_<N>.json); returns its contents. For the best checkpoint,
  the protocol's selected_on is what its training recorded (a validation split, or the eval
  split)."""
  run = setup_run(config, workdir, train=False)
  loaded = run_variables(run, checkpoint)
  selected = None
  if loaded.source == 'best':
    meta = checkpoints.read_run_meta(os.path.join(run.workdir, 'checkpoints'), loaded.step)
    selected = checkpoint_selection(meta, config.dataset.eval_split)
  eval_fn = compile_eval_step(run)
  training = workdir_lock.live_training(run.workdir)
  if training is None:
    write_run_files(run)
  # A running training owns metrics.jsonl: the scalars then go to TensorBoard only.
  writer = create_metric_writer(run.workdir, run.is_main_process,
                                metrics_file=None if training else METRICS_FILE)
  results = run_evaluation(run, eval_fn, loaded.variables, loaded.source, loaded.step, selected)
  writer.write_scalars(loaded.step, eval_scalars(results))
  report_results(run, results, _results_name(run, loaded, training))
  if run.is_main_process:
    print(outputs_line(run.workdir), flush=True)
  writer.flush()
  return results


def _results_name(run: Run, loaded: LoadedVariables, training: Optional[dict]) -> str:
  """eval_results.json, unless a training runs in the workdir: its eval_results.json is
  left alone, and the results go to eval_results.<checkpoint>-step_<N>.json."""
  training = training or workdir_lock.live_training(run.workdir)  # It may have started since.
  if training is None:
    return 'eval_results.json'
  name = f'eval_results.{loaded.source}-step_{loaded.step}.json'
  if run.is_main_process:
    print(f'a training runs in {run.workdir} ({workdir_lock.describe(training)}): its '
          f'eval_results.json is left alone; these results go to {name}', flush=True)
  return name


def visualize_run(config: Any, workdir: str, checkpoint: Optional[str] = None) -> list[str]:
  """Writes the attention figures of what --checkpoint names under workdir/visualizations/
  (step_<N>/ for a run's checkpoint, torch/ or variables/ for a file); returns the PNG paths."""
  validate_config(config)
  reason = missing_attention_maps(config.model)
  if reason:
    raise UserError(f'--mode=visualize: {reason}')
  run = setup_run(config, workdir, train=False)
  loaded = run_variables(run, checkpoint)
  figures = AttentionFigures(run)
  outputs = figures.outputs(loaded.variables)
  if not run.is_main_process:
    return []
  folder = f'step_{loaded.step}' if loaded.source in ('latest', 'best') else loaded.source
  directory = os.path.join(run.workdir, 'visualizations', folder)
  paths = figures.write_pngs(outputs, directory)
  print(f'wrote {len(paths)} attention figures ({loaded.source} checkpoint, step '
        f'{loaded.step}) to {directory}: image_0.png..image_{len(paths) - 1}.png', flush=True)
  return paths
