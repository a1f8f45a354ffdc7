"""notebooks/clan_colab.ipynb, executed headless on CPU so that it cannot rot.

The notebook's `parameters` cell is followed by an injected cell (papermill's convention) that
makes the run a few steps of a tiny CLAN on a small synthetic dataset, in this checkout,
without installing anything. Every other cell runs as a user's 'Run all' would.
"""

import json
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from helpers.commands import REPO_ROOT, cli_environment

NOTEBOOK = REPO_ROOT / 'notebooks' / 'clan_colab.ipynb'
NUM_FIGURES = 2
NUM_EXAMPLES = 4  # The notebook's predict cell writes this many test images.

# A tiny CLAN-R18 on 4 synthetic classes at 96 px (XLA:CPU runs it faster than 64 px), 3 steps.
TINY_RUN = [
    '--config.model.clca_dim=16', '--config.model.head_dim=16',
    '--config.dataset.resize_size=96', '--config.dataset.crop_size=96',
    '--config.dataset.synthetic.num_classes=4', '--config.dataset.synthetic.image_size=96',
    '--config.dataset.synthetic.train_per_class=8', '--config.dataset.synthetic.test_per_class=2',
    '--config.batch_size=8', '--config.num_train_steps=3', '--config.log_every_steps=1',
    '--config.eval_every_steps=3', '--config.checkpoint_every_steps=3',
]


def load_notebook() -> nbformat.NotebookNode:
  return nbformat.read(NOTEBOOK, as_version=4)


def parameters_index(notebook) -> int:
  tagged = [i for i, cell in enumerate(notebook.cells)
            if 'parameters' in cell.metadata.get('tags', [])]
  assert len(tagged) == 1, 'the notebook needs exactly one cell tagged "parameters"'
  return tagged[0]


def inject_parameters(notebook, **values) -> None:
  """Inserts, after the `parameters` cell, one that assigns `values` (papermill's way)."""
  index = parameters_index(notebook)
  defined = notebook.cells[index].source
  for name in values:  # A misspelled name would silently leave the default in place.
    assert f'\n{name} = ' in f'\n{defined}', f'{name} is not a parameter of the notebook'
  source = '\n'.join(f'{name} = {value!r}' for name, value in values.items())
  cell = nbformat.v4.new_code_cell(source)
  cell.metadata['tags'] = ['injected-parameters']
  notebook.cells.insert(index + 1, cell)


def kernel_for_this_python(base: pathlib.Path, monkeypatch) -> str:
  """A kernelspec running this interpreter, found first, so the kernel is never another
  Python that a 'python3' kernelspec elsewhere on the machine would start."""
  kernel_dir = base / 'jupyter' / 'kernels' / 'clan-test'
  kernel_dir.mkdir(parents=True)
  (kernel_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'clan-jax tests', 'language': 'python'}))
  monkeypatch.setenv('JUPYTER_PATH', str(base / 'jupyter'))
  monkeypatch.setenv('JUPYTER_RUNTIME_DIR', str(base / 'jupyter_runtime'))
  monkeypatch.setenv('IPYTHONDIR', str(base / 'ipython'))
  return 'clan-test'


def outputs_text(cell) -> str:
  return ''.join(output.get('text', '') for output in cell.get('outputs', [])
                 if output.output_type == 'stream')


def test_the_stored_notebook_is_clean():
  """No outputs or execution counts are checked in, and the parameters are one tagged cell."""
  notebook = load_notebook()
  nbformat.validate(notebook)
  parameters_index(notebook)
  for cell in notebook.cells:
    if cell.cell_type == 'code':
      assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


@pytest.fixture(scope='module')
def executed(tmp_path_factory):
  base = tmp_path_factory.mktemp('notebook')
  with pytest.MonkeyPatch.context() as monkeypatch:
    for name, value in cli_environment(base).items():
      monkeypatch.setenv(name, value)
    kernel = kernel_for_this_python(base, monkeypatch)
    notebook = load_notebook()
    inject_parameters(
        notebook, REPO_DIR=str(REPO_ROOT), INSTALL=False, DATASET='synthetic',
        DATA_DIR=str(base / 'data'), MANUAL_DIR=str(base / 'manual'),
        WORKDIR=str(base / 'run'), OVERRIDES=TINY_RUN, NUM_FIGURES=NUM_FIGURES)
    # A failing cell raises CellExecutionError with its traceback: the test fails there; the
    # notebook as far as it ran is kept beside the run for a look.
    try:
      NotebookClient(notebook, kernel_name=kernel, timeout=600,
                     resources={'metadata': {'path': str(base)}}).execute()
    finally:
      nbformat.write(notebook, base / 'executed.ipynb')
  return notebook, base / 'run'


def cell_containing(notebook, text: str):
  matches = [cell for cell in notebook.cells if cell.cell_type == 'code' and text in cell.source]
  assert len(matches) == 1, text
  return matches[0]


def test_notebook_trains_evaluates_draws_and_predicts(executed):
  notebook, workdir = executed
  install = outputs_text(cell_containing(notebook, 'def accelerator'))
  assert 'would run: python -m pip install --quiet -c constraints.txt -e .' in install
  assert 'jax 0.' in install and 'CpuDevice' in install

  train = outputs_text(cell_containing(notebook, "run('main.py', *train_flags"))
  assert 'step 3' in train.lower(), train[-2000:]
  results = json.loads((workdir / 'eval_results.json').read_text())
  assert results['protocol']['step'] == 3 and results['num_examples'] == 8
  assert 0.0 <= results['fused']['top1'] <= 1.0

  figures = cell_containing(notebook, "'--mode=visualize'")
  shown = [output for output in figures.outputs if 'image/png' in output.get('data', {})]
  assert len(shown) == NUM_FIGURES
  drawn = {path.name for path in (workdir / 'visualizations').glob('step_3/*.png')}
  assert {f'image_{i}.png' for i in range(NUM_FIGURES)} <= drawn

  predicted = outputs_text(cell_containing(notebook, "'clan_jax.predict'"))
  examples = sorted((workdir / 'examples').glob('*.png'))
  assert len(examples) == NUM_EXAMPLES
  for path in examples:  # Each image's path, then its class lines (4 classes: 4 of them).
    assert str(path) in predicted
  assert predicted.count('(label ') == NUM_EXAMPLES * 4, predicted
