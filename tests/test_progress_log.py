"""The training log's lines and the ETA, driven by a fake clock (no JAX)."""

import random

import pytest

from clan_jax.train import progress_log
from clan_jax.train.progress_log import ProgressClock, Rates


class FakeClock:
  def __init__(self):
    self.t = 1000.0

  def __call__(self):
    return self.t


def simulate(total_steps=1000, log_every=50, eval_every=200, batch_size=16, compile_s=90.0,
             step_s=0.5, jitter=0.1, eval_compile_s=40.0, eval_images=1000, seed=0):
  """A run as the loop drives the clock: the first step compiles, each evaluation (at every
  `eval_every` steps and at the end) forwards `eval_images` at 2.5x the training rate per
  image, and the first also compiles, for `eval_compile_s` (the clock guesses 3x and half
  the first step's time until it has timed one). Returns (step, ETA given, seconds the run
  really had left, line) at each log step."""
  rng = random.Random(seed)
  now = FakeClock()
  clock = ProgressClock(batch_size, now)
  eval_s = eval_images / 2.5 * step_s / batch_size
  logged, evaluated = [], 0
  for step in range(1, total_steps + 1):
    now.t += step_s * (1 + rng.uniform(-jitter, jitter)) + (compile_s if step == 1 else 0)
    if step == 1:
      clock.start(step)
    if step % log_every == 0 or step == total_steps:
      rates = clock.take_rates(step)
      evals_left = progress_log.evaluations_from(step, total_steps, eval_every)
      eta = clock.eta(rates, total_steps - step, evals_left, eval_images)
      line = progress_log.step_line(step, total_steps, 2.0, 0.5, rates, eta)
      logged.append((step, eta, now.t, line))
    if (eval_every and step % eval_every == 0) or step == total_steps:
      with clock.evaluation():
        if not evaluated:
          now.t += eval_compile_s
          clock.one_off(eval_compile_s)
        now.t += eval_s
      evaluated += 1
  return [(step, eta, now.t - at, line) for step, eta, at, line in logged]


@pytest.mark.parametrize('settings', [
    {},  # 0.5 s a step, 1000 steps, 5 evaluations.
    {'step_s': 27.0, 'compile_s': 300.0, 'eval_every': 100, 'total_steps': 400, 'log_every': 10},
    {'eval_every': 0, 'jitter': 0.3},  # Only the final evaluation; noisy steps.
    {'eval_every': 37, 'eval_images': 5794, 'batch_size': 16},  # CUB-like: evaluations weigh.
])
def test_the_eta_is_within_20_percent_from_the_first_log_step(settings):
  logged = simulate(**settings)
  for step, eta, left, line in logged[:-1]:
    assert abs(eta - left) <= 0.2 * left, (step, eta, left, line)
  step, eta, left, line = logged[-1]  # The last step: only the final evaluation remains.
  assert abs(eta - left) <= 0.2 * left + 1


def test_rates_leave_out_the_compilation_and_the_evaluations():
  now = FakeClock()
  clock = ProgressClock(16, now)
  now.t += 100  # The first step compiles.
  clock.start(1)
  now.t += 9 * 0.5
  assert clock.take_rates(10) == Rates(2.0, 32.0)
  now.t += 5 * 0.5
  with clock.evaluation():
    now.t += 60
  now.t += 5 * 0.5
  assert clock.take_rates(20) == Rates(2.0, 32.0)
  assert clock.take_rates(20) is None  # No step since the last line.


def test_rates_and_eta_are_none_before_a_step_completed_after_the_first():
  clock = ProgressClock(8, FakeClock())
  clock.start(1)
  rates = clock.take_rates(1)
  assert rates is None
  line = progress_log.step_line(1, 100, 4.6, 0.0, rates, None)
  assert line.startswith('step 1/100: loss 4.6000, fused train top-1 0.0000, ')
  assert 'ETA' in line and 'compilation' in line


def test_the_step_line():
  line = progress_log.step_line(150, 350, 1.23456, 0.45678, Rates(1.7712, 28.34), 113.4)
  assert line == ('step 150/350: loss 1.2346, fused train top-1 0.4568, 28.3 images/s, '
                  '1.77 steps/s, ETA 0:01:53')
  slow = progress_log.step_line(40, 400, 3.0, 0.1, Rates(1 / 27, 16 / 27), 360 * 27)
  assert '0.593 images/s' not in slow and '0.59 images/s, 27.0 s/step, ETA 2:42:00' in slow


@pytest.mark.parametrize('seconds, text', [(0, '0:00:00'), (59.6, '0:01:00'),
                                           (61, '0:01:01'), (3600 * 27 + 4, '27:00:04')])
def test_durations(seconds, text):
  assert progress_log.format_duration(seconds) == text


@pytest.mark.parametrize('rate, text', [(1234.5, '1234 steps/s'), (15.26, '15.3 steps/s'),
                                        (1.0, '1.00 steps/s'), (0.5, '2.00 s/step'),
                                        (1 / 27, '27.0 s/step'), (1 / 400, '400 s/step')])
def test_step_rates_below_one_a_second_are_seconds_per_step(rate, text):
  assert progress_log.format_step_rate(rate) == text


def test_evaluations_left_match_the_loops_schedule():
  for total in (1, 7, 12, 40):
    for every in (0, 1, 3, 4, 12, 50):
      for step in range(1, total + 2):
        due = [s for s in range(step, total + 1) if (every and s % every == 0) or s == total]
        assert progress_log.evaluations_from(step, total, every) == len(due), (total, every, step)


HEADS = {name: {'top1': top1, 'top5': 1.0} for name, top1 in
         [('concat', 0.96), ('layer2', 0.4123), ('layer3', 0.77), ('top', 0.9531)]}


def test_the_eval_line_lists_the_heads_in_the_models_order():
  line = progress_log.eval_line(350, {'top1': 0.9675, 'top5': 0.999}, HEADS)
  assert line == ('eval @ step 350: fused top-1 0.9675, top-5 0.9990, per head top 0.953 '
                  'layer2 0.412 layer3 0.770 concat 0.960')
  with_val = progress_log.eval_line(8, {'top1': 0.5, 'top5': 1.0}, {}, ('val', 0.625))
  assert with_val == 'eval @ step 8: fused top-1 0.5000, top-5 1.0000; val top-1 0.6250 (val split)'
  # Four heads and a validation split at step 123,456: two decimals make them fit.
  line = progress_log.eval_line(123456, {'top1': 0.9675, 'top5': 0.999}, HEADS,
                                ('train[:10%]', 0.5))
  assert line.endswith(', per head top 0.95 layer2 0.41 layer3 0.77 concat 0.96; val top-1 '
                       '0.5000 (train[:10%] split)')
  assert len(line) <= progress_log.LINE_LIMIT


def test_long_lines_are_cut_to_the_limit_with_the_heads_left_out_counted():
  heads = {f'layer{i}_with_a_long_name': {'top1': 0.5, 'top5': 0.9} for i in range(30)}
  line = progress_log.eval_line(123456, {'top1': 0.5, 'top5': 0.9}, heads,
                                ('train[:10%]', 0.7))
  assert len(line) <= progress_log.LINE_LIMIT
  assert line.startswith('eval @ step 123456: fused top-1 0.5000, top-5 0.9000, per head ')
  assert line.endswith(' more); val top-1 0.7000 (train[:10%] split)')
  step = progress_log.step_line(10**7, 10**7, 12345.678, 1.0, Rates(1e-4, 1e-3), 1e9)
  assert len(step) <= progress_log.LINE_LIMIT
  for *_, line in simulate():
    assert len(line) <= progress_log.LINE_LIMIT
