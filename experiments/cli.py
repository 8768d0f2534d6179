"""What the entry points share."""

import contextlib
import logging as py_logging
import sys

from absl import app, logging


def start(argv) -> None:
  """Refuses stray arguments and sets up logging: ours at INFO.

  Libraries that log at INFO through absl (orbax: every save and restore) or
  jax stay at WARNING, or they would drown the training log.
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  py_logging.getLogger('absl').setLevel(py_logging.WARNING)
  py_logging.getLogger('jax').setLevel(py_logging.WARNING)
  logging.use_python_logging()
  py_logging.getLogger().setLevel(py_logging.INFO)


def check_output_folder(path, flag: str = '--out') -> None:
  """Refuses an output folder that is an existing file, before any work."""
  from dcgan import errors  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  if path and epath.Path(path).exists() and not epath.Path(path).is_dir():
    raise errors.RunError(f'{flag} {path} is a file: give a folder (it is '
                          'made if missing).')


@contextlib.contextmanager
def user_errors():
  """Ends the program with the message alone for errors in what the user gave.

  A bad config value, a missing file or folder, or a run that cannot go on
  (`errors.RunError`: a busy workdir, say) is the user's to fix: a traceback
  would only hide the one line that says what to do.
  """
  # pylint: disable-next=g-import-not-at-top
  from dcgan import errors
  try:
    yield
  except (errors.ConfigError, FileNotFoundError, errors.RunError) as error:
    sys.exit(f'Error: {error}')
