"""Latents, truncation, walks, arithmetic and loading trained networks."""

import importlib
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dcgan import models, sampling

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / 'benchmarks'))
reference_step = importlib.import_module('reference_step')


# Truncation.


@pytest.mark.parametrize('dist', sampling.LATENT_DISTS)
def test_no_truncation_draws_what_training_draws(dist):
  rng = jax.random.key(3)
  expected = (jax.random.uniform(rng, (5, 7), minval=-1.0, maxval=1.0)
              if dist == 'uniform' else jax.random.normal(rng, (5, 7)))
  np.testing.assert_array_equal(
      sampling.sample_latents(rng, 5, 7, dist, truncation=None), expected)


@pytest.mark.parametrize('dist,truncation', [('uniform', 0.5),
                                             ('normal', 0.5),
                                             ('normal', 1.5)])
def test_truncation_is_the_prior_conditioned_on_the_range(dist, truncation):
  rng = jax.random.key(0)
  latents = np.asarray(sampling.sample_latents(rng, 20000, 10, dist,
                                               truncation))
  assert np.abs(latents).max() <= truncation
  # Compare with rejection sampling from the prior: same distribution.
  prior = np.asarray(sampling.sample_latents(jax.random.key(1), 100000, 10,
                                             dist)).ravel()
  kept = prior[np.abs(prior) <= truncation]
  for quantile in (0.1, 0.25, 0.5, 0.75, 0.9):
    assert abs(np.quantile(latents, quantile) -
               np.quantile(kept, quantile)) < 0.02 * truncation


def test_truncating_uniform_latents_scales_them_toward_zero():
  latents = sampling.sample_latents(jax.random.key(0), 4, 8)
  np.testing.assert_allclose(sampling.truncate(latents, 0.3, 'uniform'),
                             0.3 * latents, rtol=1e-6)
  # t >= 1 keeps U(-1, 1) latents as they are.
  np.testing.assert_array_equal(sampling.truncate(latents, 2.0, 'uniform'),
                                latents)


def test_normal_truncation_is_monotonic_and_smooth_in_t():
  z = jnp.linspace(-4.0, 4.0, 81)
  for t in (0.25, 1.0, 2.0):
    out = np.asarray(sampling.truncate(z, t, 'normal'))
    assert np.all(np.diff(out) > 0)  # order kept: a seed changes smoothly
    np.testing.assert_allclose(out, -out[::-1], atol=1e-6)  # odd
    assert np.abs(out).max() <= t
  # Large t is (almost) no truncation; the map moves little between t's.
  np.testing.assert_allclose(sampling.truncate(z, 6.0, 'normal'), z,
                             atol=2e-3)
  a = np.asarray(sampling.truncate(z, 1.0, 'normal'))
  b = np.asarray(sampling.truncate(z, 1.01, 'normal'))
  assert np.abs(a - b).max() < 0.011


def test_truncation_rejects_bad_values():
  with pytest.raises(ValueError, match='truncation must be > 0'):
    sampling.truncate(jnp.zeros((2, 3)), 0.0)
  with pytest.raises(ValueError, match='latent_dist must be one of'):
    sampling.truncate(jnp.zeros((2, 3)), 0.5, 'cauchy')


def test_a_seed_names_one_latent():
  latents = sampling.latents_for_seeds([5, 9, 5], 16, 'normal')
  assert latents.shape == (3, 16)
  np.testing.assert_array_equal(latents[0], latents[2])
  assert np.any(latents[0] != latents[1])
  np.testing.assert_array_equal(
      latents[1], sampling.sample_latents(jax.random.key(9), 1, 16,
                                          'normal')[0])


# Interpolation.


def test_interpolations_start_and_end_at_the_latents():
  start, end = jax.random.normal(jax.random.key(0), (2, 3, 100))
  for method in sampling.INTERPOLATIONS:
    path = sampling.interpolate(start, end, 7, method)
    assert path.shape == (7, 3, 100)
    np.testing.assert_array_equal(path[0], start)
    np.testing.assert_array_equal(path[-1], end)
  lerp = sampling.interpolate(start, end, 5, 'lerp')
  np.testing.assert_allclose(lerp[2], (start + end) / 2, rtol=1e-6)


def test_slerp_keeps_the_norm_where_lerp_shrinks_it():
  start, end = jax.random.normal(jax.random.key(1), (2, 100))
  end = end / jnp.linalg.norm(end) * jnp.linalg.norm(start)
  norm = jnp.linalg.norm(start)
  slerp = sampling.interpolate(start, end, 9, 'slerp')
  np.testing.assert_allclose(jnp.linalg.norm(slerp, axis=-1), norm,
                             rtol=1e-5)
  lerp = sampling.interpolate(start, end, 9, 'lerp')
  # Nearly orthogonal 100-d vectors: the midpoint is ~1/sqrt(2) as long.
  assert float(jnp.linalg.norm(lerp[4])) < 0.8 * float(norm)
  # Equal angles between frames: constant speed on the sphere.
  steps = jnp.linalg.norm(jnp.diff(slerp, axis=0), axis=-1)
  np.testing.assert_allclose(steps, steps[0], rtol=1e-4)


def test_slerp_of_parallel_latents_is_finite():
  start = jnp.ones((4,))
  path = sampling.interpolate(start, 2.0 * start, 3, 'slerp')
  np.testing.assert_allclose(path[1], 1.5 * start, rtol=1e-6)


def test_interpolate_rejects_bad_arguments():
  z = jnp.zeros((2, 4))
  with pytest.raises(ValueError, match='interpolation must be one of'):
    sampling.interpolate(z, z, 3, 'cubic')
  with pytest.raises(ValueError, match='num_frames must be >= 2'):
    sampling.interpolate(z, z, 1)
  with pytest.raises(ValueError, match='differ'):
    sampling.interpolate(z, jnp.zeros((3, 4)), 3)


# Arithmetic.


def test_concept_arithmetic_averages_each_group():
  a = jnp.array([[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]])
  b = jnp.array([[0.0, 1.0], [0.0, 3.0], [0.0, 2.0]])
  c = jnp.array([[5.0, 5.0]])
  np.testing.assert_allclose(sampling.concept_arithmetic(a, b, c),
                             [2.0 + 5.0, 1.0 - 2.0 + 5.0])
  np.testing.assert_allclose(sampling.latent_direction(a, b), [2.0, -1.0])
  with pytest.raises(ValueError, match='negative must be'):
    sampling.latent_direction(a, jnp.zeros((0, 2)))


def test_jitter_keeps_the_latent_first_and_bounds_the_noise():
  latent = jnp.arange(6.0)
  out = sampling.jitter(latent, 9, jax.random.key(0), scale=0.25)
  assert out.shape == (9, 6)
  np.testing.assert_array_equal(out[0], latent)
  noise = np.asarray(out[1:] - latent)
  assert np.abs(noise).max() <= 0.25 and np.abs(noise).min() > 0


# With a trained G.


def test_load_generator_from_workdir_checkpoints_or_one_step(tiny_workdir):
  loaded = sampling.load_generator(tiny_workdir)
  assert loaded.step == 6 and loaded.config.image_size == 32
  assert not logging.getLogger('absl').filters  # the notices' filter is gone
  generator, variables, config, step = loaded  # still a 4-tuple
  assert type(generator).__name__ == 'Generator'
  from_folder = sampling.load_generator(tiny_workdir / 'checkpoints')
  assert from_folder.step == 6
  assert_trees_equal(from_folder.variables, variables)
  from_step = sampling.load_generator(tiny_workdir / 'checkpoints' / '3')
  assert from_step.step == 3
  assert not trees_equal(from_step.variables, variables)
  assert_trees_equal(sampling.load_generator(tiny_workdir, 3).variables,
             from_step.variables)


def test_load_discriminator_restores_d(tiny_workdir):
  discriminator, variables, config, step = sampling.load_discriminator(
      tiny_workdir)
  assert type(discriminator).__name__ == 'Discriminator' and step == 6
  logits = discriminator.apply(
      variables, jnp.zeros((2, config.image_size, config.image_size, 3)),
      train=False)
  assert logits.shape == (2,) and np.all(np.isfinite(logits))


def test_sampling_refuses_bad_counts_and_latents(tiny_workdir):
  generator, variables, config, _ = sampling.load_generator(tiny_workdir)
  for num in (0, -3, 2.0):
    with pytest.raises(ValueError,
                       match=f'num must be an integer >= 1, got {num!r}'):
      sampling.sample_images(generator, variables, config, num)
  for shape in ((2, 7), (0, 16), (16,)):
    with pytest.raises(ValueError, match=re.escape(
        f'latents must be (B >= 1, 16) for this generator, got {shape}')):
      sampling.generate_images(generator, variables, np.zeros(shape))
  assert sampling.sample_images(generator, variables, config,
                                np.int64(2)).shape == (2, 32, 32, 3)


def test_load_errors_say_what_to_do(tiny_workdir, tmp_path):
  with pytest.raises(FileNotFoundError, match='it has steps \\[3, 6\\]'):
    sampling.load_generator(tiny_workdir, 5)
  with pytest.raises(FileNotFoundError, match='step 3, but step 6'):
    sampling.load_generator(tiny_workdir / 'checkpoints' / '3', 6)
  with pytest.raises(FileNotFoundError, match='not a training workdir'):
    sampling.load_generator(tmp_path)
  (tmp_path / 'config.json').write_text('{}')
  with pytest.raises(FileNotFoundError, match='train first'):
    sampling.load_generator(tmp_path)


def test_a_checkpoint_without_its_workdir_still_loads(tiny_workdir, tmp_path):
  # The config comes from the checkpoint itself, not the workdir.
  shutil.copytree(tiny_workdir / 'checkpoints' / '6', tmp_path / '6')
  loaded = sampling.load_generator(tmp_path / '6')
  assert loaded.step == 6 and loaded.config.latent_dim == 16


@pytest.mark.parametrize('chunk_size', [8, 5, 21, 64])
def test_generate_in_chunks_equals_one_pass(tiny_workdir, chunk_size):
  """21 latents in chunks of 7 (8), of 5 with 4 padded rows, and whole."""
  generator, variables, config, _ = sampling.load_generator(tiny_workdir)
  latents = sampling.sample_latents(jax.random.key(0), 21, config.latent_dim)
  generate = jax.jit(sampling.generate, static_argnums=(0, 4))
  args = (generator, variables['params'], variables['batch_stats'], latents)
  chunked = generate(*args, chunk_size)
  whole = generate(*args, None)
  assert chunked.shape == (21, 32, 32, 3)
  # Rows in their places; another row count may change the last float bits.
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole),
                             rtol=1e-5, atol=1e-7)
  jaxpr = str(jax.make_jaxpr(sampling.generate, static_argnums=(0, 4))(
      *args, chunk_size))
  assert ('scan' in jaxpr) == (chunk_size < 21)


def _loop_invariant_work(hlo: str) -> list[str]:
  """Instructions of the (one) while loop's body that need no loop state.

  The loop-invariant inputs are the tuple elements the body passes on
  unchanged; an instruction is invariant if all it reads is. Reading an
  input, a constant or a bitcast is not work.
  """
  bodies = reference_step.hlo_computations(hlo)
  body_names = re.findall(r'body=%?([\w.\-]+)', hlo)
  assert len(body_names) == 1, body_names
  instructions = []
  for line in bodies[body_names[0]]:
    if ' = ' not in line:
      continue
    line = re.sub(r'/\*.*?\*/', '', line)  # /*index=5*/ comments
    m = re.match(r'\s*(ROOT )?%?([\w.\-]+) = .+? ([a-z][\w\-]*)\(([^)]*)\)',
                 line)
    index = re.search(r'index=(\d+)', line)
    instructions.append((bool(m.group(1)), m.group(2), m.group(3),
                         re.findall(r'%?([\w.\-]+)', m.group(4)),
                         index and int(index.group(1))))
  param = next(n for _, n, op, _, _ in instructions if op == 'parameter')
  gte = {n: i for _, n, op, args, i in instructions
         if op == 'get-tuple-element' and args == [param]}
  root = next(args for is_root, _, op, args, _ in instructions if is_root)
  invariant = {n for n, i in gte.items() if root[i] == n}
  work = []
  for _, n, op, args, _ in instructions:
    if op == 'constant' or (args and all(a in invariant for a in args)):
      invariant.add(n)
      if op not in ('bitcast', 'constant', 'get-tuple-element', 'tuple'):
        work.append(f'{n} ({op})')
  return work


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_the_chunk_loop_redoes_no_parameter_work(dtype):
  """Kernel re-layouts for the matmuls happen once, not once per chunk.

  At this size the 3x3 -> 6x6 layer splits into tap groups, each with its
  own slice of the kernel copied for its matmul (`layers._hoistable`).
  """
  generator = models.Generator(image_size=48, base_features=16,
                               dtype=jnp.dtype(dtype))
  latents = jnp.zeros((16, 100))
  variables = generator.init(jax.random.key(0), latents[:1], train=False)
  hlo = jax.jit(sampling.generate, static_argnums=(0, 4)).lower(
      generator, variables['params'], variables['batch_stats'], latents,
      8).compile().as_text()
  assert _loop_invariant_work(hlo) == []


def test_generate_rejects_a_bad_chunk_size(tiny_workdir):
  generator, variables, config, _ = sampling.load_generator(tiny_workdir)
  latents = jnp.zeros((4, config.latent_dim))
  with pytest.raises(ValueError, match='chunk_size must be >= 1'):
    sampling.generate(generator, variables['params'],
                      variables['batch_stats'], latents, 0)


def test_generated_images_do_not_depend_on_batching(tiny_workdir):
  generator, variables, config, _ = sampling.load_generator(tiny_workdir)
  latents = sampling.sample_latents(jax.random.key(0), 21, config.latent_dim)
  whole = sampling.generate_images(generator, variables, latents)
  assert whole.shape == (21, 32, 32, 3) and whole.dtype == np.uint8
  pieces = sampling.generate_images(generator, variables, latents,
                                    batch_size=8)
  direct = sampling.to_uint8(generator.apply(variables, latents, train=False))
  # Padding and batching may change the last float bit, not a pixel value
  # by more than one level.
  assert np.abs(pieces.astype(int) - whole).max() <= 1
  assert np.abs(direct.astype(int) - whole).max() <= 1
  np.testing.assert_array_equal(
      sampling.sample_images(generator, variables, config, 21, seed=0),
      whole)


def test_find_latents_returns_latents_in_the_asked_class(tiny_workdir):
  generator, variables, config, _ = sampling.load_generator(tiny_workdir)

  def classify(pixels):
    brightness = pixels.mean(axis=(1, 2, 3))
    return {'light': (brightness > np.median(brightness)).astype(int),
            'parity': np.arange(len(pixels)) % 2}

  for wanted in (0, 1):
    latents = sampling.find_latents(generator, variables, config, classify,
                                    {'light': wanted}, num=5, batch_size=8)
    assert latents.shape == (5, config.latent_dim)
    # Classified again within the first batch drawn, they are in the class.
    batch = sampling.sample_latents(jax.random.fold_in(jax.random.key(0), 0),
                                    8, config.latent_dim)
    labels = classify(sampling.generate_images(generator, variables, batch))
    chosen = [i for i, row in enumerate(np.asarray(batch))
              if any(np.array_equal(row, l) for l in np.asarray(latents))]
    assert chosen and all(labels['light'][i] == wanted for i in chosen)
  with pytest.raises(ValueError, match="no attribute 'smile'"):
    sampling.find_latents(generator, variables, config, classify,
                          {'smile': 1}, batch_size=8)
  with pytest.raises(ValueError, match='Only 0 of 16'):
    sampling.find_latents(generator, variables, config, classify,
                          {'light': 7}, batch_size=8, max_samples=16)


def trees_equal(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def assert_trees_equal(a, b) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert trees_equal(a, b)



# The command line.


def _run(args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'experiments.sample', *args],
                        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def test_sample_cli_walks_truncation_and_grid_only(tiny_workdir, tmp_path):
  result = _run(['--workdir', str(tiny_workdir / 'checkpoints' / '6'),
                 '--num', '3', '--interpolate', '4', '--seed', '2',
                 '--end_seed', '5', '--out', str(tmp_path / 'walk')])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Wrote walk.png and walk.gif (3 walks of 4 frames, slerp, seeds 2 ' \
         'to 5) from step 6' in result.stderr
  # Orbax's notices about the read-only checkpoint folder are not shown.
  assert 'read only' not in result.stderr and 'read_only' not in result.stderr
  walk = np.asarray(Image.open(tmp_path / 'walk' / 'walk.png'))
  assert walk.shape == (3 * 34 + 2, 4 * 34 + 2, 3)
  # The first column is the latents of --seed, the last those of --end_seed.
  generator, variables, config, _ = sampling.load_generator(tiny_workdir)
  ends = [sampling.sample_images(generator, variables, config, 3, seed=seed)
          for seed in (2, 5)]
  np.testing.assert_array_equal(walk[2:34, 2:34], ends[0][0])
  np.testing.assert_array_equal(walk[2 + 2 * 34:34 + 2 * 34, -34:-2],
                                ends[1][2])
  with Image.open(tmp_path / 'walk' / 'walk.gif') as gif:
    assert gif.n_frames == 2 * 4 - 2  # there and back

  result = _run(['--workdir', str(tiny_workdir), '--num', '4', '--grid_only',
                 '--truncation', '0.5', '--out', str(tmp_path / 'grid')])
  assert result.returncode == 0, result.stderr[-3000:]
  assert [p.name for p in (tmp_path / 'grid').iterdir()] == ['grid.png']
  grid = np.asarray(Image.open(tmp_path / 'grid' / 'grid.png'))
  truncated = sampling.sample_images(generator, variables, config, 4, seed=0,
                                     truncation=0.5)
  np.testing.assert_array_equal(grid[2:34, 2:34], truncated[0])
  assert not np.array_equal(
      truncated, sampling.sample_images(generator, variables, config, 4))


def test_sample_cli_refuses_bad_paths_without_traceback(
    tiny_workdir, tmp_path):
  one_step = tiny_workdir / 'checkpoints' / '3'
  for args, message in (
      (['--workdir', str(one_step), '--step', '6'],
       f'Error: {one_step} is the checkpoint of step 3, but step 6 was asked '
       f'for: give the checkpoints/ folder ({one_step.parent}) to choose a '
       'step.'),
      (['--workdir', str(tiny_workdir), '--step', '5'],
       f'Error: No checkpoint of step 5 in {tiny_workdir / "checkpoints"}; '
       'it has steps [3, 6].')):
    result = _run([*args, '--out', str(tmp_path / 'out')])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == message
    assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'out').exists()
  (tmp_path / 'a_file').write_text('kept')
  result = _run(['--workdir', str(tiny_workdir), '--out',
                 str(tmp_path / 'a_file')])
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f'Error: --out {tmp_path / "a_file"} is a file: give a folder (it is '
      'made if missing).')
  assert (tmp_path / 'a_file').read_text() == 'kept'
