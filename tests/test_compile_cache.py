"""The persistent cache of compiled programs (`dcgan.compile_cache`).

Runs in a subprocess with JAX's own cache settings removed from its
environment: this session's tests share one cache (conftest.py), which
`enable` would otherwise leave in place.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import collections, json, os, sys
    import jax
    from dcgan import compile_cache, train
    from experiments.configs import tiny

    root = sys.argv[1]
    result = {'key': compile_cache.host_key()}
    # Refused and empty folders leave the cache off.
    blocker = os.path.join(root, 'a_file')
    open(blocker, 'w').close()
    result['refused'] = compile_cache.enable(os.path.join(blocker, 'xla'))
    result['empty'] = compile_cache.enable('')
    result['after_both'] = jax.config.jax_compilation_cache_dir

    events, saved = collections.Counter(), []
    jax.monitoring.register_event_listener(
        lambda name, **kw: events.update([name]))
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: saved.append(secs) if
        name == '/jax/compilation_cache/compile_time_saved_sec' else None)

    config = tiny.get_config()
    config.num_train_steps = 2
    config.checkpoint_every_steps = 2
    config.data.cache_dir = os.path.join(root, 'data')
    config.compilation_cache_dir = os.path.join(root, 'xla')
    workdir = os.path.join(root, 'run')
    train.train_and_evaluate(config, workdir)
    result['folder'] = jax.config.jax_compilation_cache_dir
    result['first_hits'] = events['/jax/compilation_cache/cache_hits']
    # Another folder now changes nothing: the first one stays.
    result['again'] = compile_cache.enable(os.path.join(root, 'other'))

    events.clear()
    config.num_train_steps = 4  # resumes from step 2's checkpoint
    train.train_and_evaluate(config, workdir)
    result['second_hits'] = events['/jax/compilation_cache/cache_hits']
    result['saved_secs'] = sum(saved)
    print(json.dumps(result))
''')


def test_a_resumed_run_loads_its_compiled_programs(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith('JAX_COMPILATION_CACHE')
         and not k.startswith('JAX_PERSISTENT_CACHE')}
  process = subprocess.run([sys.executable, '-c', SCRIPT, str(tmp_path)],
                           cwd=REPO_ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
  assert process.returncode == 0, process.stderr[-3000:]
  result = json.loads(process.stdout.strip().splitlines()[-1])

  assert result['refused'] is None and result['empty'] is None
  assert result['after_both'] is None
  assert 'cannot make' in process.stderr  # the refused folder's warning
  folder = tmp_path / 'xla' / result['key']
  assert result['folder'] == str(folder)
  assert result['again'] == str(folder)
  assert result['key'].startswith(os.uname().machine)
  assert not (tmp_path / 'other').exists()
  # Nothing to load on the first run; on the resumed one at least the
  # state's initialisation and the training step come from the folder,
  # which holds their files.
  assert result['first_hits'] == 0
  assert result['second_hits'] >= 2
  assert result['saved_secs'] > 1.0
  assert len(list(folder.iterdir())) >= 2


def test_commands_reading_a_run_use_its_cache_folder(tiny_workdir, tmp_path):
  from dcgan import compile_cache  # pylint: disable=g-import-not-at-top
  env = {k: v for k, v in os.environ.items()
         if not k.startswith('JAX_COMPILATION_CACHE')}
  # Tiny programs compile in well under the default 1 s threshold.
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_workdir, workdir)
  config_path = workdir / 'config.json'
  config = json.loads(config_path.read_text())
  key = compile_cache.host_key()

  def sample(folder, home):
    if folder is None:
      config.pop('compilation_cache_dir', None)  # a run from before the key
    else:
      config['compilation_cache_dir'] = folder
    config_path.write_text(json.dumps(config))
    process = subprocess.run(
        [sys.executable, '-m', 'experiments.sample', '--workdir',
         str(workdir), '--num', '4', '--grid_only', '--out',
         str(tmp_path / 'out')],
        cwd=REPO_ROOT, env={**env, 'HOME': str(home)}, capture_output=True,
        text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]

  sample(str(tmp_path / 'xla'), tmp_path / 'home1')
  assert len(list((tmp_path / 'xla' / key).iterdir())) >= 1
  assert not (tmp_path / 'home1').exists()
  # Without the key: the default folder, under the user's home.
  sample(None, tmp_path / 'home2')
  assert len(list(
      (tmp_path / 'home2' / '.cache' / 'dcgan' / 'xla' / key).iterdir())) >= 1
  # '' turns it off.
  sample('', tmp_path / 'home3')
  assert not (tmp_path / 'home3').exists()
  assert (tmp_path / 'out' / 'grid.png').exists()
