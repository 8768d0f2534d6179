"""One training process per workdir; a killed one's lock is taken over."""

import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from dcgan import errors, train, workdir

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _hold_lock_in_a_process(path: pathlib.Path) -> subprocess.Popen:
  """A process that takes the lock, says so, and sleeps until killed."""
  code = textwrap.dedent(f"""
      import sys, time
      from dcgan import workdir
      with workdir.lock({str(path)!r}):
        print('locked', flush=True)
        time.sleep(600)
  """)
  process = subprocess.Popen([sys.executable, '-c', code], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == 'locked'
  return process


def test_second_holder_is_refused_naming_the_first(tmp_path):
  with workdir.lock(tmp_path) as stale:
    assert stale == {}
    owner = json.loads((tmp_path / 'lock').read_text())
    assert owner['pid'] == os.getpid()
    assert owner['host'] == socket.gethostname()
    with pytest.raises(workdir.WorkdirBusyError) as error:
      with workdir.lock(tmp_path):
        pass
  message = str(error.value)
  assert f'pid {os.getpid()} on {socket.gethostname()}' in message
  assert owner['started'] in message and 'another --workdir' in message
  assert isinstance(error.value, errors.RunError)
  # Released: free again, and nothing stale left behind.
  with workdir.lock(tmp_path) as stale:
    assert stale == {}


def test_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
  process = _hold_lock_in_a_process(tmp_path)
  try:
    with pytest.raises(workdir.WorkdirBusyError,
                       match=f'pid {process.pid} on'):
      with workdir.lock(tmp_path):
        pass
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
  caplog.set_level(logging.WARNING)
  with workdir.lock(tmp_path) as stale:
    assert stale['pid'] == process.pid
  assert any(f'Taking over the lock of pid {process.pid}' in r.getMessage()
             for r in caplog.records)


def test_garbled_lock_file_is_taken_over(tmp_path):
  (tmp_path / 'lock').write_text('{"pid": 12')  # cut short by a kill
  with workdir.lock(tmp_path) as stale:
    assert stale == {'pid': '{"pid": 12'}


def test_training_refuses_a_busy_workdir(tiny_config, tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  process = _hold_lock_in_a_process(run)
  try:
    start = time.perf_counter()
    with pytest.raises(workdir.WorkdirBusyError, match=f'pid {process.pid}'):
      train.train_and_evaluate(tiny_config, run)
    assert time.perf_counter() - start < 10  # before building or compiling
    assert sorted(p.name for p in run.iterdir()) == ['lock']

    result = subprocess.run(
        [sys.executable, '-m', 'experiments.avatar', '--workdir', str(run),
         '--config', str(REPO_ROOT / 'experiments/configs/tiny.py')],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS='cpu'))
    assert result.returncode != 0
    assert (f'Error: {run} is in use by another training process (pid '
            f'{process.pid}') in result.stderr
    assert 'Traceback' not in result.stderr
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
