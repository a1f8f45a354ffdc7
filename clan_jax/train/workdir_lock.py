"""One training per workdir: workdir/training.lock, held by the training that runs there.

The file holds who runs (host, pid, command), since when, and a heartbeat that a thread
refreshes every HEARTBEAT_SECONDS. It is created atomically (O_CREAT | O_EXCL) and removed
when the training ends, however it ends short of SIGKILL. A file left by a killed run is
recognised as stale and replaced: on the same host, when no process holds its flock (the lock
dies with its process) or its pid runs no more; on another host, when its heartbeat is older
than STALE_AFTER_SECONDS. File locks alone are not trusted: NFS, gcsfuse and Drive implement
flock partly or not at all, hence the heartbeat. Evaluation only reads the lock
(`live_training`), to leave the running training's files alone.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from typing import Callable, Iterator, Optional

from clan_jax.base.errors import UserError

LOCK_FILE = 'training.lock'
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS  # Some margin for clocks that differ across hosts.
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF)


class WorkdirInUseError(UserError):
  """A live training holds the workdir."""


def _now() -> datetime.datetime:
  return datetime.datetime.now().astimezone()


def _timestamp(moment: datetime.datetime) -> str:
  return moment.isoformat(timespec='seconds')


def _read(path: str) -> Optional[dict]:
  """The lock's record; {} when unreadable (being written, or cut short); None when absent."""
  for attempt in range(3):
    try:
      with open(path) as f:
        record = json.load(f)
      return record if isinstance(record, dict) else {}
    except (FileNotFoundError, NotADirectoryError):
      return None
    except (OSError, ValueError):
      if attempt < 2:
        time.sleep(0.05)  # A heartbeat may be rewriting it.
  return {}


def _flock_held(path: str) -> Optional[bool]:
  """Whether a process holds the file's flock (True), none does (False), or it cannot be told
  (None: no such lock on this file system). False is only proof on the holder's own host."""
  try:
    fd = os.open(path, os.O_RDWR)
  except OSError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return False
  except BlockingIOError:
    return True
  except OSError as e:
    if e.errno in _UNSUPPORTED:
      return None
    raise
  finally:
    os.close(fd)  # Also drops the probe's own flock.


def _pid_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's process.
    return True
  return True


def _heartbeat_age(path: str, record: dict) -> float:
  """Seconds since the holder's last heartbeat (the file's mtime if the record has none)."""
  try:
    beat = datetime.datetime.fromisoformat(record['heartbeat']).timestamp()
  except (KeyError, TypeError, ValueError):
    try:
      beat = os.stat(path).st_mtime
    except OSError:
      return 0.0
  return max(0.0, time.time() - beat)


def _stale_reason(path: str, record: dict, stale_after: float) -> Optional[str]:
  """Why the lock's holder is gone, or None while it may still run."""
  held = _flock_held(path)
  if held:
    return None
  pid = record.get('pid')
  if record.get('host') == socket.gethostname() and isinstance(pid, int):
    if held is False:
      return f'no process holds it: pid {pid} has ended'
    if not _pid_running(pid):
      return f'pid {pid} is no longer running'
  age = _heartbeat_age(path, record)
  if age > stale_after:
    return f'its heartbeat is {age:.0f} s old'
  return None


def live_training(workdir: str, stale_after: float = STALE_AFTER_SECONDS) -> Optional[dict]:
  """The record of the training running in `workdir` (host, pid, started, heartbeat,
  command), or None when none runs there. Reads only."""
  path = os.path.join(workdir, LOCK_FILE)
  record = _read(path)
  if record is None or _stale_reason(path, record, stale_after):
    return None
  return record


def refuse_if_in_use(workdir: str) -> None:
  """Raises WorkdirInUseError if a training runs in `workdir` (main.py: a busy workdir
  fails before TensorFlow loads; training takes the lock later)."""
  path = os.path.join(workdir, LOCK_FILE)
  record = live_training(workdir)
  if record is not None:
    raise WorkdirInUseError(_in_use_message(workdir, path, record))


def describe(record: dict) -> str:
  """'pid P on host H since T': the holder, for messages."""
  return (f'pid {record.get("pid", "?")} on host {record.get("host", "?")} since '
          f'{record.get("started", "?")}')


def _in_use_message(workdir: str, path: str, record: dict) -> str:
  command = record.get('command', '')
  if len(command) > 160:
    command = command[:157] + '...'
  return (f'--workdir {workdir} is in use by a training: {describe(record)} (heartbeat '
          f'{_heartbeat_age(path, record):.0f} s ago{": " + command if command else ""}). '
          'Wait for it, stop it, or use another --workdir; if that process is gone, delete '
          f'{path}.')


class WorkdirLock:
  """A held training.lock: its heartbeat thread runs until release()."""

  def __init__(self, path: str, fd: int, record: dict, heartbeat_seconds: float):
    self.path, self._fd, self.record = path, fd, record
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, args=(heartbeat_seconds,),
                                    name='workdir-lock-heartbeat', daemon=True)
    self._thread.start()

  def _is_ours(self) -> bool:
    try:
      return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
    except OSError:
      return False

  def _beat(self, interval: float) -> None:
    while not self._stop.wait(interval):
      if not self._is_ours():
        logging.warning('%s was removed or replaced while this training runs: another training '
                        'may now write to the same workdir', self.path)
        return
      self.record['heartbeat'] = _timestamp(_now())
      try:
        _write(self._fd, self.record)
      except OSError as e:  # A full disk must not stop the training; the lock may go stale.
        logging.warning('cannot refresh the heartbeat of %s: %s', self.path, e.strerror or e)

  def release(self) -> None:
    """Stops the heartbeat and removes the file (if it is still this training's)."""
    self._stop.set()
    self._thread.join()
    try:
      if self._is_ours():
        os.remove(self.path)
    finally:
      os.close(self._fd)


def _write(fd: int, record: dict) -> None:
  data = json.dumps(record, indent=2).encode() + b'\n'
  os.pwrite(fd, data, 0)
  os.ftruncate(fd, len(data))
  os.fsync(fd)  # Other hosts (NFS, gcsfuse) see it only once flushed.


def _try_create(path: str, heartbeat_seconds: float) -> Optional[WorkdirLock]:
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
  except FileExistsError:
    return None
  try:
    # Released by the kernel when the process ends, however it ends. Blocking: another
    # start's probe (_flock_held) may hold it for an instant.
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
      if e.errno not in _UNSUPPORTED:
        raise
    started = _timestamp(_now())
    record = {'host': socket.gethostname(), 'pid': os.getpid(), 'started': started,
              'heartbeat': started, 'command': shlex.join(sys.argv)}
    _write(fd, record)
  except BaseException:
    os.close(fd)
    os.remove(path)
    raise
  return WorkdirLock(path, fd, record, heartbeat_seconds)


def _remove_stale(path: str, record: dict) -> bool:
  """Moves the stale file aside and deletes it, unless what was moved is not `record`
  (another start replaced it meanwhile: then it goes back). Whether it was removed."""
  aside = f'{path}.stale.{os.getpid()}.{threading.get_ident()}'
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return True  # Another start removed it first; creating it decides between us.
  if _read(aside) != record:
    os.rename(aside, path)
    return False
  os.remove(aside)
  return True


def acquire(workdir: str, heartbeat_seconds: float = HEARTBEAT_SECONDS,
            stale_after: float = STALE_AFTER_SECONDS) -> WorkdirLock:
  """Takes workdir/training.lock (the folder exists), replacing a stale one with a warning;
  raises WorkdirInUseError naming the live holder."""
  path = os.path.join(workdir, LOCK_FILE)
  for _ in range(5):
    lock = _try_create(path, heartbeat_seconds)
    if lock is not None:
      return lock
    record = _read(path)
    if record is None:
      continue  # Released meanwhile.
    reason = _stale_reason(path, record, stale_after)
    if reason is None:
      raise WorkdirInUseError(_in_use_message(workdir, path, record))
    if _remove_stale(path, record):
      logging.warning('replacing the stale lock %s of a training that is gone (%s: %s)', path,
                      describe(record), reason)
  raise WorkdirInUseError(f'--workdir {workdir}: could not take {path}: other trainings keep '
                          'starting there. Start one training per workdir.')


@contextlib.contextmanager
def hold(workdir: str, **timing: float) -> Iterator[WorkdirLock]:
  """The lock of `workdir` for the duration of the block (`timing`: acquire's keywords)."""
  lock = acquire(workdir, **timing)
  try:
    yield lock
  finally:
    lock.release()


@contextlib.contextmanager
def claims() -> Iterator[Callable[[str], WorkdirLock]]:
  """A function that takes a workdir's lock when called (once the workdir is known to be
  writable); whatever it took is released when the block ends."""
  with contextlib.ExitStack() as held:
    yield lambda workdir: held.enter_context(hold(workdir))
