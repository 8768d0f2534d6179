"""One training process per workdir: a lock file held with `fcntl.flock`.

`<workdir>/lock` holds the owner's pid, host name and start time. The kernel
releases a flock when its process ends, however it ends (SIGKILL included),
so a lock left by a killed run is never held: the next run takes it over and
says whose it was. A second live process on the same workdir is refused.

flock is advisory and local: processes on other machines sharing the workdir
over NFS may not see each other's locks.
"""

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator

from etils import epath

from dcgan import errors

LOCK_NAME = 'lock'


class WorkdirBusyError(errors.RunError):
  """Another live process trains in this workdir."""


def _describe(owner: dict) -> str:
  return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started "
          f"{owner.get('started', '?')}")


def _read_owner(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 4096).decode('utf-8', 'replace').strip()
  if not text:
    return {}
  try:
    owner = json.loads(text)
  except json.JSONDecodeError:
    return {'pid': text[:40]}
  return owner if isinstance(owner, dict) else {}


def _write_owner(fd: int, owner: dict) -> None:
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, (json.dumps(owner) + '\n').encode())
  os.fsync(fd)


@contextlib.contextmanager
def lock(workdir: epath.PathLike) -> Iterator[dict]:
  """Holds `<workdir>/lock` for the duration of the block.

  Args:
    workdir: an existing folder.

  Yields:
    The previous owner's record ({'pid', 'host', 'started'}) when a lock left
    by a process that died was taken over, else {}.

  Raises:
    WorkdirBusyError: another live process holds the lock.
  """
  path = os.path.join(os.fspath(workdir), LOCK_NAME)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = _read_owner(fd)
      raise WorkdirBusyError(
          f'{workdir} is in use by another training process '
          f'({_describe(owner)}). Wait for it to finish, stop it (kill -TERM '
          f"{owner.get('pid', '<pid>')} saves a checkpoint and exits), or "
          'choose another --workdir.') from None
    stale = _read_owner(fd)
    if stale:
      logging.warning('Taking over the lock of %s in %s: that process no '
                      'longer holds it (it was killed or crashed).',
                      _describe(stale), workdir)
    _write_owner(fd, {
        'pid': os.getpid(), 'host': socket.gethostname(),
        'started': datetime.datetime.now().astimezone().isoformat(
            timespec='seconds')})
    try:
      yield stale
    finally:
      # Emptied, not deleted: another process may already have it open and be
      # waiting on this very inode.
      os.ftruncate(fd, 0)
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
