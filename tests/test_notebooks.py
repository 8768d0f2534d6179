"""Every notebook in notebooks/ runs top to bottom on a tiny trained run."""

import json
import os
import pathlib
import sys

import nbclient
import nbformat
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / 'notebooks').glob('*.ipynb'))


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
  """A 'python3' kernel that runs this interpreter, whatever else is installed.

  Jupyter looks in $JUPYTER_PATH before the user's and the system's folders,
  so a kernelspec there wins over one that names another Python.
  """
  spec = tmp_path / 'jupyter' / 'kernels' / 'python3'
  spec.mkdir(parents=True)
  (spec / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f',
               '{connection_file}'],
      'display_name': 'Python 3 (tests)', 'language': 'python'}))
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  return tmp_path


def _execute(notebook, cwd):
  client = nbclient.NotebookClient(
      notebook, kernel_name='python3', timeout=300,
      resources={'metadata': {'path': str(cwd)}})
  return client.execute()


def _text(cell) -> str:
  return ''.join(output.get('text', '') for output in cell.outputs
                 if output.output_type == 'stream')


def test_there_are_notebooks():
  assert [p.name for p in NOTEBOOKS] == ['sample.ipynb']


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  for cell in notebook.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, (
          f'{path.name} has outputs: clear them before committing')


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, tiny_workdir, kernel_env,
                                     monkeypatch):
  monkeypatch.setenv('DCGAN_WORKDIR', str(tiny_workdir))
  notebook = nbformat.read(path, as_version=4)
  notebook.cells.insert(0, nbformat.v4.new_code_cell(
      'import sys; print(sys.executable)'))
  executed = _execute(notebook, kernel_env)  # raises on a cell's error

  assert (os.path.realpath(_text(executed.cells[0]).strip()) ==
          os.path.realpath(sys.executable))
  code = [cell for cell in executed.cells if cell.cell_type == 'code']
  assert all(cell.execution_count for cell in code)
  pictures = sum(1 for cell in code for output in cell.outputs
                 if 'image/png' in output.get('data', {}))
  if path.name == 'sample.ipynb':
    assert f'{tiny_workdir}: step 6' in ''.join(map(_text, code))
    # Grid, truncation, two walks, arithmetic, two direction grids, and
    # explore's grid unless ipywidgets draws it into a widget.
    assert pictures in (7, 8)


def test_sample_notebook_says_what_to_do_without_a_run(kernel_env,
                                                       monkeypatch):
  missing = kernel_env / 'no_such_run'
  monkeypatch.setenv('DCGAN_WORKDIR', str(missing))
  notebook = nbformat.read(REPO_ROOT / 'notebooks' / 'sample.ipynb',
                           as_version=4)
  with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
    _execute(notebook, kernel_env)
  message = str(error.value)
  assert 'FileNotFoundError' in message and str(missing) in message
  assert 'python -m experiments.avatar --workdir runs/a1' in message
