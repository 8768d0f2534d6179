"""The step with the batch sharded over 4 (fake CPU) devices equals 1 device.

Runs in a subprocess: the device count must be set before JAX starts.
"""

import pathlib
import subprocess
import sys
import textwrap

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import jax
    jax.config.update('jax_num_cpu_devices', 4)
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from dcgan import models, train
    from dcgan import state as state_lib
    from experiments.configs import tiny

    assert jax.device_count() == 4, jax.devices()
    config = tiny.get_config()
    generator, discriminator = models.create_models(config.model,
                                                    config.image_size)
    g_tx, d_tx = state_lib.create_optimizers(config)
    step = train.jit_train_step(train.make_train_step(
        config, generator, discriminator, g_tx, d_tx))
    images = jax.random.uniform(jax.random.key(0), (8, 32, 32, 3),
                                minval=-1, maxval=1)

    def run(mesh):
        state = jax.device_put(
            state_lib.create_state(config, generator, discriminator, g_tx,
                                   d_tx), NamedSharding(mesh, P()))
        batch = {'image': jax.device_put(images,
                                         NamedSharding(mesh, P('data')))}
        rng = jax.random.key(3)
        for _ in range(3):
            state, metrics = step(state, batch, rng)
        return jax.device_get((state, metrics)), batch['image'].sharding

    def leaves(tree):
        # A bias followed by BatchNorm has a true gradient of zero: Adam
        # turns its rounding noise into +-lr steps, different per layout.
        return {jax.tree_util.keystr(path): leaf for path, leaf
                in jax.tree_util.tree_flatten_with_path(tree)[0]
                if not (path[-1] == jax.tree_util.DictKey('bias') and
                        any(str(p) in ("['deconv1']", "['deconv2']",
                                       "['conv1']", "['conv2']", "['conv3']")
                            for p in path))}

    single, _ = run(jax.make_mesh((1,), ('data',), devices=jax.devices()[:1],
                                  axis_types=(jax.sharding.AxisType.Auto,)))
    sharded, sharding = run(train.create_mesh())
    assert len(sharding.device_set) == 4
    single, sharded = leaves(single), leaves(sharded)
    assert single.keys() == sharded.keys() and len(single) > 50
    for key in single:
        # Running means also follow those biases.
        atol = 1e-3 if "['mean']" in key else 2e-5
        np.testing.assert_allclose(single[key], sharded[key], rtol=1e-3,
                                   atol=atol, err_msg=key)
    print('OK')
''')


def test_sharded_step_equals_single_device_step():
  result = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith('OK')
