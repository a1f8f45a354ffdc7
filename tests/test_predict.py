"""clan_jax.predict: top-5 classes of image files, from a workdir or a PyTorch checkpoint.

The CLI runs on the session's `trained_synthetic_workdir` (a tiny CLAN-R18 trained by main.py
on easy synthetic classes) and on test images of its own synthetic dataset, saved as files.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clan_jax.base.errors import UserError
from clan_jax.inference import predictor
from clan_jax.viz import figures
from helpers.commands import REPO_ROOT, cli_environment
from helpers.figure_pixels import has_red_title
from helpers.trained_model import TRAINED_SYNTHETIC_EVAL_STEPS, synthetic_test_image

# With `pytest -n N --dist loadgroup`, one worker runs the tests of the shared trained model.
pytestmark = pytest.mark.xdist_group('trained_synthetic')
NUM_TEST_IMAGES = 5  # Labels cycle 0..3, so every class is there, and label 0 twice.


def run_predict(workdir, *args, returncode=0):
  result = subprocess.run([sys.executable, '-m', 'clan_jax.predict', *map(str, args)],
                          cwd=REPO_ROOT, env=cli_environment(workdir.parent),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == returncode, (
      f'exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}')
  assert 'Traceback' not in result.stderr, result.stderr[-4000:]
  return result


@pytest.fixture(scope='module')
def image_files(trained_synthetic_workdir, tmp_path_factory):
  """{name: (path, label or None)}: synthetic test images as PNG (one as JPEG), one of them
  as grayscale, RGBA, CMYK and palette files, a file that is not an image and a missing one."""
  directory = tmp_path_factory.mktemp('images')
  files = {}
  for index in range(NUM_TEST_IMAGES):
    image, label = synthetic_test_image(trained_synthetic_workdir, index)
    name = f'test{index}.jpg' if index == NUM_TEST_IMAGES - 1 else f'test{index}.png'
    Image.fromarray(image).save(directory / name, quality=95)
    files[name] = (directory / name, label)
  image, label = synthetic_test_image(trained_synthetic_workdir, 1)
  Image.fromarray(image).convert('L').save(directory / 'gray.png')
  Image.fromarray(image).convert('RGBA').save(directory / 'rgba.png')
  Image.fromarray(image).convert('CMYK').save(directory / 'cmyk.jpg', quality=95)
  Image.fromarray(image).convert('P', palette=Image.Palette.ADAPTIVE).save(
      directory / 'palette.png')
  (directory / 'broken.jpg').write_bytes(b'these bytes are not an image\n' * 10)
  for name in ('gray.png', 'rgba.png', 'cmyk.jpg', 'palette.png'):
    files[name] = (directory / name, label)
  files['broken.jpg'] = (directory / 'broken.jpg', None)
  files['missing.png'] = (directory / 'missing.png', None)
  return files


@pytest.fixture(scope='module')
def json_run(trained_synthetic_workdir, image_files):
  """One --json run over every file, the best checkpoint, batches of 4 (the last padded)."""
  paths = [str(path) for path, _ in image_files.values()]
  checkpoints_before = _listing(trained_synthetic_workdir / 'checkpoints')
  result = run_predict(trained_synthetic_workdir, f'--workdir={trained_synthetic_workdir}',
                       '--checkpoint=best', '--json', '--batch_size=4', *paths, returncode=1)
  assert _listing(trained_synthetic_workdir / 'checkpoints') == checkpoints_before
  records = [json.loads(line) for line in result.stdout.splitlines()]
  return result, {record['image']: record for record in records}, records


def _listing(directory):
  """Every path under directory with its modification time: prediction changes none."""
  return sorted((str(p), p.stat().st_mtime_ns) for p in directory.rglob('*'))


def test_json_lines_hold_exactly_the_documented_keys_and_nothing_else(
    json_run, image_files, trained_synthetic_workdir):
  result, _, records = json_run
  assert result.stdout.endswith('\n') and len(result.stdout.splitlines()) == len(image_files)
  assert [r['image'] for r in records] == [str(p) for p, _ in image_files.values()]
  names = json.loads((trained_synthetic_workdir / 'classes.json').read_text())['classes']
  for record in records:
    if 'error' in record:
      assert set(record) == {'image', 'error'} and isinstance(record['error'], str)
      continue
    assert set(record) == {'image', 'top5'}
    assert len(record['top5']) == 4  # All 4 classes: fewer than 5.
    for entry in record['top5']:
      assert set(entry) == {'label', 'name', 'prob'}
      assert type(entry['label']) is int and type(entry['prob']) is float
      assert entry['name'] == names[entry['label']]
    probs = [entry['prob'] for entry in record['top5']]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5
    assert sorted(entry['label'] for entry in record['top5']) == [0, 1, 2, 3]


def test_the_right_class_ranks_first_on_synthetic_test_images(json_run, image_files):
  _, by_path, _ = json_run
  for name, (path, label) in image_files.items():
    if name.startswith('test'):  # PNG files and one JPEG.
      top = by_path[str(path)]['top5'][0]
      assert top['label'] == label, (name, by_path[str(path)])
      assert top['prob'] > 0.9, (name, top)


def test_rgba_grayscale_cmyk_and_palette_files_are_read_as_rgb(json_run, image_files):
  _, by_path, _ = json_run
  original = {e['label']: e['prob'] for e in by_path[str(image_files['test1.png'][0])]['top5']}
  rgba = {e['label']: e['prob'] for e in by_path[str(image_files['rgba.png'][0])]['top5']}
  # Opaque RGBA -> the same RGB pixels (in another batch row: tolerance, not equality).
  assert rgba.keys() == original.keys()
  np.testing.assert_allclose([rgba[k] for k in original], list(original.values()), atol=1e-5)
  for name in ('gray.png', 'cmyk.jpg', 'palette.png'):
    assert len(by_path[str(image_files[name][0])]['top5']) == 4, name


def test_unreadable_and_missing_files_are_reported_and_the_others_predicted(
    json_run, image_files):
  result, by_path, _ = json_run
  broken = by_path[str(image_files['broken.jpg'][0])]
  missing = by_path[str(image_files['missing.png'][0])]
  assert 'broken.jpg: cannot be decoded as an image' in broken['error']
  assert 'missing.png: no such image file' in missing['error']
  assert sum('top5' in record for record in by_path.values()) == len(image_files) - 2
  assert f'2 of {len(image_files)} images could not be read' in result.stderr  # Exit 1.


def test_best_checkpoint_is_an_evaluated_one(json_run):
  result, _, _ = json_run
  step = int(re.search(r'checkpoint step (\d+) \(best\)', result.stderr).group(1))
  assert step in TRAINED_SYNTHETIC_EVAL_STEPS


def test_human_output_is_the_path_and_a_line_per_class(trained_synthetic_workdir, image_files):
  paths = [image_files[f'test{i}.png'][0] for i in range(4)]
  result = run_predict(trained_synthetic_workdir, f'--workdir={trained_synthetic_workdir}',
                       '--batch_size=4', *paths)
  lines = result.stdout.splitlines()
  assert len(lines) == 4 * 5
  for i, path in enumerate(paths):
    block = lines[5 * i:5 * i + 5]
    assert block[0] == str(path)
    for line in block[1:]:
      assert re.fullmatch(r'  [01]\.\d{4}  \S+ \(label [0-3]\)', line), line
    assert block[1].endswith(f'(label {image_files[f"test{i}.png"][1]})')
  assert 'checkpoint step 40 (latest)' in result.stderr


@pytest.fixture(scope='module')
def figures_run(trained_synthetic_workdir, image_files, tmp_path_factory):
  """One --json --figures run: images in folders named after their class (the true one, or
  another one), one in a folder that is no class, one unreadable; two share a name."""
  names = json.loads((trained_synthetic_workdir / 'classes.json').read_text())['classes']
  base = tmp_path_factory.mktemp('by_class')
  paths, expected = [], {}  # expected: figure name -> (true class known, prediction right)
  for index, true_folder in ((0, True), (1, True), (2, False)):
    path, label = image_files[f'test{index}.png']
    folder = base / names[label if true_folder else (label + 1) % len(names)]
    folder.mkdir(exist_ok=True)
    paths.append(folder / path.name)
    paths[-1].write_bytes(path.read_bytes())
    expected[f'test{index}_attention.png'] = (True, true_folder)
  paths.append(image_files['test0.png'][0])  # Its folder is no class; the name is taken.
  expected['test0_2_attention.png'] = (False, None)
  paths.append(image_files['broken.jpg'][0])  # No figure.
  out = tmp_path_factory.mktemp('figures') / 'new'  # Created by the command.
  result = run_predict(trained_synthetic_workdir, f'--workdir={trained_synthetic_workdir}',
                       f'--figures={out}', '--json', '--batch_size=2', *paths, returncode=1)
  return result, out, [json.loads(line) for line in result.stdout.splitlines()], expected


def test_figures_writes_one_png_per_predicted_image_named_after_it(figures_run):
  result, out, records, expected = figures_run
  assert sorted(os.listdir(out)) == sorted(expected)
  assert [record.get('figure') for record in records] == [
      str(out / name) for name in expected] + [None]  # The unreadable file: none.
  assert f'wrote 4 attention figures to {out}' in result.stderr
  for name in expected:
    with Image.open(out / name) as figure:
      assert figure.mode == 'RGB' and figure.width == round(6 * figures.PANEL_INCHES *
                                                            figures.DPI)


def test_figures_mark_a_prediction_that_the_folder_name_contradicts(figures_run):
  _, out, _, expected = figures_run
  for name, (known, right) in expected.items():
    red = has_red_title(np.asarray(Image.open(out / name)))
    assert red == (known and not right), name


def test_figure_names_come_from_the_image_names_and_never_replace_one(tmp_path):
  names = ['a/x.jpg', 'b/x.jpg', 'x.png', 'x_2.jpg', 'y', 'c/.z']
  assert predictor.figure_paths(names, 'out') == [os.path.join('out', name) for name in (
      'x_attention.png', 'x_2_attention.png', 'x_3_attention.png', 'x_2_2_attention.png',
      'y_attention.png', '.z_attention.png')]
  # The figures' folder holds the images, one of them named as x.png's figure would be.
  images = [str(tmp_path / 'x.png'), str(tmp_path / 'x_attention.png')]
  assert predictor.figure_paths(images, str(tmp_path)) == [
      str(tmp_path / 'x_2_attention.png'), str(tmp_path / 'x_attention_attention.png')]


def test_the_true_class_is_the_folders_name_when_it_is_a_class(tmp_path):
  assert predictor.folder_label('root/test/wren/1.jpg', ['finch', 'wren']) == 1
  assert predictor.folder_label('photos/1.jpg', ['finch', 'wren']) is None
  assert predictor.folder_label('1.jpg', ['finch', 'wren']) is None  # The current folder.
  (tmp_path / 'file').write_text('')
  with pytest.raises(UserError, match='--figures=.*/file is a file; give a folder'):
    predictor.make_figures_dir(str(tmp_path / 'file'))


def test_format_record():
  record = {'image': 'a.jpg', 'top5': [{'label': 3, 'name': 'wren', 'prob': 0.81234},
                                       {'label': 0, 'name': 'tit', 'prob': 0.1}]}
  assert predictor.format_record(record) == 'a.jpg\n  0.8123  wren (label 3)\n  0.1000  tit (label 0)'
  assert predictor.format_record({'image': 'b.jpg', 'error': 'b.jpg: no such image file.'}) == (
      'b.jpg\n  error: b.jpg: no such image file.')
  assert predictor.format_record({**record, 'figure': 'f/a_attention.png'}).endswith(
      '(label 0)\n  figure: f/a_attention.png')


def test_top_k_breaks_ties_by_label_and_stops_at_k():
  probabilities = np.array([0.1, 0.3, 0.1, 0.3, 0.05, 0.05, 0.1], np.float32)
  top = predictor.top_k(probabilities, [f'c{i}' for i in range(7)])
  assert [e['label'] for e in top] == [1, 3, 0, 2, 6]


def test_torch_checkpoint_gives_the_twins_probabilities(trained_synthetic_workdir, image_files,
                                                        tmp_path):
  import ml_collections
  import torch

  from clan_jax.datasets import preprocess
  from clan_jax.pytorch.twin import create_torch_model
  from helpers.torch_helpers import randomize_, to_nchw

  config = ml_collections.ConfigDict(
      json.loads((trained_synthetic_workdir / 'config.json').read_text()))
  twin = randomize_(create_torch_model(config.model, 4), seed=5).eval()
  torch.save(twin.state_dict(), tmp_path / 'twin.pth')
  paths = [image_files[f'test{i}.png'][0] for i in range(3)]
  # An empty data_dir: the dataset is not prepared there, so the classes are numbered.
  result = run_predict(trained_synthetic_workdir, f'--torch_checkpoint={tmp_path / "twin.pth"}',
                       f'--config={trained_synthetic_workdir / "tiny_config.py"}',
                       f'--config.dataset.data_dir={tmp_path / "empty"}', '--json', *paths)
  assert 'class names are numbered' in result.stderr
  images = np.stack([preprocess.load_and_preprocess(p, 96, 96) for p in paths])
  with torch.no_grad():
    expected = torch.softmax(twin(to_nchw(images))['logits'].double(), -1).numpy()
  for line, row in zip(result.stdout.splitlines(), expected):
    record = json.loads(line)
    got = {e['label']: e['prob'] for e in record['top5']}
    assert {e['name'] for e in record['top5']} == {f'class_{i}' for i in range(4)}
    np.testing.assert_allclose([got[k] for k in range(4)], row, atol=1e-4)


def test_class_names_come_from_a_prepared_dataset(trained_synthetic_workdir):
  import ml_collections

  config = ml_collections.ConfigDict(
      json.loads((trained_synthetic_workdir / 'config.json').read_text()))
  names = json.loads((trained_synthetic_workdir / 'classes.json').read_text())['classes']
  assert predictor.dataset_class_names(config.dataset, 4) == names
  assert predictor.dataset_class_names(config.dataset, 5) == [f'class_{i}' for i in range(5)]


@pytest.mark.parametrize('args, message', [
    (['--workdir={missing}', 'a.png'], 'no such directory'),
    (['--workdir={empty}', 'a.png'], 'is not a training workdir: it lacks config.json'),
    (['--workdir={no_checkpoints}', 'a.png'], 'checkpoints (no such folder); train first'),
    (['--workdir={workdir}'], 'no image given'),
    (['--workdir={workdir}', '--torch_checkpoint=x.pth', 'a.png'], 'not both'),
    (['--torch_checkpoint=x.pth', 'a.png'], '--torch_checkpoint needs --config'),
])
def test_user_errors_are_messages_with_status_2(trained_synthetic_workdir, tmp_path, args,
                                                message):
  (tmp_path / 'empty').mkdir()
  no_checkpoints = tmp_path / 'no_checkpoints'
  no_checkpoints.mkdir()
  for name in ('config.json', 'classes.json'):
    (no_checkpoints / name).write_text((trained_synthetic_workdir / name).read_text())
  values = {'missing': tmp_path / 'missing', 'empty': tmp_path / 'empty',
            'no_checkpoints': no_checkpoints, 'workdir': trained_synthetic_workdir}
  result = run_predict(trained_synthetic_workdir, *[a.format(**values) for a in args],
                       returncode=2)
  assert message in result.stderr and 'error: ' in result.stderr
  assert result.stdout == ''


def test_a_workdir_under_home_written_with_a_tilde(tmp_path, monkeypatch):
  """The shell passes the ~ of --workdir=~/run as it is: it is the home folder."""
  monkeypatch.setenv('HOME', str(tmp_path))
  (tmp_path / 'run').mkdir()
  with pytest.raises(UserError, match='^--workdir=~/run is not a training workdir'):
    predictor.predictor_from_workdir('~/run')  # Not: no such directory.


@pytest.mark.parametrize('where', ['parent', 'checkpoints'])
def test_a_folder_that_holds_the_run_or_is_inside_it_names_the_run(trained_synthetic_workdir,
                                                                  where):
  """`--workdir=runs` for runs/demo, or runs/demo/checkpoints: did you mean runs/demo?"""
  from clan_jax.base.errors import UserError

  folder = {'parent': trained_synthetic_workdir.parent,
            'checkpoints': trained_synthetic_workdir / 'checkpoints'}[where]
  with pytest.raises(UserError, match=f'^--workdir={re.escape(str(folder))} is not a training '
                     f'workdir: .* Did you mean {re.escape(str(trained_synthetic_workdir))}\\?$'):
    predictor.predictor_from_workdir(str(folder))
