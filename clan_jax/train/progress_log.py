"""The training log, written for a person: one line per log step and one per evaluation.

    step 150/350: loss 1.2345, fused train top-1 0.4562, 28.3 images/s, 1.77 steps/s, ETA 0:01:53
    eval @ step 350: fused top-1 0.9675, top-5 0.9990, per head top 0.953 layer2 0.412 ...

The rates count completed training steps only (not the compilation of the first step, not
evaluations), over the steps since the previous log line; the ETA adds the evaluations still
due, each costing what the last one did (its compilation left out). Pure Python: the tests
drive `ProgressClock` with a fake clock. The numbers also go to TensorBoard and metrics.jsonl
(clan_jax/train/metric_writer.py).
"""

import contextlib
import dataclasses
import time
from typing import Callable, Iterator, Mapping, Optional

# The longest message: with the log's prefix ('I1203 12:34:56.123456 140597854313344
# loop.py:250] ', about 50 characters) a line stays within 200.
LINE_LIMIT = 145
# An evaluated image costs about a third of a trained one (a forward pass, no backward): the
# guess for an evaluation's time until one has been timed.
EVAL_IMAGE_COST = 1 / 3
# The first evaluation also compiles the eval step (and the figures' forward pass): guessed
# as this share of what the first training step took (its compilation, mostly).
EVAL_COMPILE_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class Rates:
  steps_per_sec: float
  images_per_sec: float


class ProgressClock:
  """Training time (the wall clock less compilation and evaluations), rates and the ETA.

  Made just before the first step. `start(step)` once that step has finished: its
  compilation is left out. Each evaluation runs inside `evaluation()`; a first call that
  compiles reports its time to `one_off(seconds)`, which later evaluations will not spend.
  """

  def __init__(self, batch_size: int, now: Callable[[], float] = time.monotonic):
    self.batch_size = batch_size
    self.now = now
    self._created = now()
    self._first_step = 0.0  # Seconds from `_created` to the first step's end.
    self._trained = 0.0  # Training seconds before the current stretch.
    self._stretch_start: Optional[float] = None  # None: not training (not started, evaluating).
    self._window: Optional[tuple[int, float]] = None  # (step, training seconds): rates since.
    self._last_eval: Optional[float] = None  # The last evaluation's seconds, one-offs left out.
    self._one_off = 0.0

  def start(self, step: int) -> None:
    """`step` has finished: training time counts from now."""
    self._stretch_start = self.now()
    self._first_step = self._stretch_start - self._created
    self._window = (step, self.training_seconds())

  def training_seconds(self) -> float:
    running = 0.0 if self._stretch_start is None else self.now() - self._stretch_start
    return self._trained + running

  @contextlib.contextmanager
  def evaluation(self) -> Iterator[None]:
    """Leaves what runs inside out of the training time and times it as one evaluation."""
    started = self.now()
    training = self._stretch_start is not None
    if training:
      self._trained += started - self._stretch_start
      self._stretch_start = None
    self._one_off = 0.0
    try:
      yield
    finally:
      ended = self.now()
      self._last_eval = max(ended - started - self._one_off, 0.0)
      if training:
        self._stretch_start = ended

  def one_off(self, seconds: float) -> None:
    """Seconds of the current evaluation that the next ones will not spend (compilation)."""
    self._one_off += seconds

  def take_rates(self, step: int) -> Optional[Rates]:
    """Steps/s and images/s over the steps since the last call (or `start`), and a new
    window from `step`; None when no step has completed in the window."""
    if self._window is None:
      return None
    first, trained_before = self._window
    trained = self.training_seconds()
    self._window = (step, trained)
    steps, seconds = step - first, trained - trained_before
    if steps <= 0 or seconds <= 0:
      return None
    return Rates(steps / seconds, steps * self.batch_size / seconds)

  def eval_seconds(self, rates: Rates, eval_images: int) -> float:
    """What an evaluation is expected to take: the last one, or a guess from `rates`."""
    if self._last_eval is not None:
      return self._last_eval
    return eval_images * EVAL_IMAGE_COST / rates.images_per_sec

  def eta(self, rates: Rates, steps_left: int, evals_left: int, eval_images: int) -> float:
    """Seconds until the loop ends: the steps at `rates`, and the evaluations still due
    (the first of the run also compiles)."""
    compiling = EVAL_COMPILE_SHARE * self._first_step if self._last_eval is None else 0.0
    evaluations = evals_left * self.eval_seconds(rates, eval_images) + compiling
    return steps_left / rates.steps_per_sec + (evaluations if evals_left else 0.0)


def evaluations_from(step: int, total_steps: int, every: int) -> int:
  """How many evaluations run at steps step..total_steps: every `every` steps (0: none but
  the final one) and at the last step."""
  if step > total_steps:
    return 0
  if every <= 0:
    return 1
  periodic = total_steps // every - (step - 1) // every
  return periodic + (0 if total_steps % every == 0 else 1)


def format_duration(seconds: float) -> str:
  """h:mm:ss, e.g. '0:01:53', '27:03:04'."""
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{secs:02d}'


def _three_digits(value: float) -> str:
  if value >= 100:
    return f'{value:.0f}'
  return f'{value:.1f}' if value >= 10 else f'{value:.2f}'


def format_step_rate(steps_per_sec: float) -> str:
  """'1.77 steps/s', or below one step a second '27.0 s/step'."""
  if steps_per_sec >= 1:
    return f'{_three_digits(steps_per_sec)} steps/s'
  return f'{_three_digits(1 / steps_per_sec)} s/step'


def step_line(step: int, total_steps: int, loss: float, top1: float, rates: Optional[Rates],
              eta: Optional[float]) -> str:
  """The line of a log step: the train loss and fused top-1 since the previous line."""
  parts = [f'step {step}/{total_steps}: loss {loss:.4f}', f'fused train top-1 {top1:.4f}']
  if rates is None:
    parts.append('rates and ETA from the next line (this one includes the compilation)')
  else:
    parts += [f'{_three_digits(rates.images_per_sec)} images/s',
              format_step_rate(rates.steps_per_sec)]
    if eta is not None:
      parts.append(f'ETA {format_duration(eta)}')
  return ', '.join(parts)


def _head_rank(name: str) -> tuple:
  # The model's order: the top head, the middle ones, the concatenation.
  return ({'top': 0, 'concat': 2}.get(name, 1), name)


def _per_head(heads: Mapping[str, Mapping[str, float]], names: list[str], room: int) -> str:
  """', per head top 0.953 layer2 0.412 ...' within `room` characters: 3 decimals, else 2,
  else the heads that fit and how many are left out; '' if none fits."""
  for decimals in (3, 2):
    text = ', per head ' + ' '.join(f'{n} {heads[n]["top1"]:.{decimals}f}' for n in names)
    if len(text) <= room:
      return text
  items = [f'{name} {heads[name]["top1"]:.2f}' for name in names]
  for count in range(len(items) - 1, 0, -1):
    text = ', per head ' + ' '.join(items[:count]) + f' (+{len(items) - count} more)'
    if len(text) <= room:
      return text
  return ''


def eval_line(step: int, fused: Mapping[str, float], heads: Mapping[str, Mapping[str, float]],
              validation: Optional[tuple[str, float]] = None, limit: int = LINE_LIMIT) -> str:
  """The line of an evaluation: fused top-1 and top-5, each head's top-1 (shortened to fit
  in `limit`) and, given (split, top-1), the validation split's fused top-1."""
  text = f'eval @ step {step}: fused top-1 {fused["top1"]:.4f}, top-5 {fused["top5"]:.4f}'
  tail = '' if validation is None else (
      f'; val top-1 {validation[1]:.4f} ({validation[0]} split)')
  names = sorted(heads, key=_head_rank)
  text += _per_head(heads, names, limit - len(text) - len(tail)) if names else ''
  return (text + tail)[:limit]
