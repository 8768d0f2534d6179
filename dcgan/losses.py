"""GAN losses as pure functions of discriminator logits.

D(x) = sigmoid(logit). The tutorial trains D with sigmoid cross-entropy
(labels 1 for real, 0 for fake, each term a batch mean, summed) and G with the
non-saturating loss -log D(G(z)). With D = 1/2 everywhere each term is log 2
and the D loss is log 4, the value at the game's optimum.
"""

import jax
import jax.numpy as jnp

G_LOSSES = ('non_saturating', 'minimax')


def sigmoid_cross_entropy(logits: jnp.ndarray, label: float) -> jnp.ndarray:
  """Mean binary cross-entropy of sigmoid(logits) against a constant label."""
  # log sigmoid(x) = -softplus(-x) and log(1 - sigmoid(x)) = -softplus(x),
  # stable for large |x|.
  return jnp.mean(label * jax.nn.softplus(-logits) +
                  (1.0 - label) * jax.nn.softplus(logits))


def discriminator_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray
                       ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """D's loss: -log D(x) - log(1 - D(G(z))), each averaged over its batch.

  Args:
    real_logits: (B,) D's logits on real images.
    fake_logits: (B,) D's logits on generated images.

  Returns:
    The total loss and its terms {'d_loss_real', 'd_loss_fake'}.
  """
  real = sigmoid_cross_entropy(real_logits, 1.0)
  fake = sigmoid_cross_entropy(fake_logits, 0.0)
  return real + fake, {'d_loss_real': real, 'd_loss_fake': fake}


def generator_loss(fake_logits: jnp.ndarray,
                   kind: str = 'non_saturating') -> jnp.ndarray:
  """G's loss on D's logits for generated images, shape (B,).

  'non_saturating' (the tutorial's, and the DCGAN paper's): -log D(G(z)).
  'minimax' (the original GAN objective): log(1 - D(G(z))).
  """
  if kind == 'non_saturating':
    return sigmoid_cross_entropy(fake_logits, 1.0)
  if kind == 'minimax':
    return -sigmoid_cross_entropy(fake_logits, 0.0)
  raise ValueError(f'generator loss must be one of {G_LOSSES}, got {kind!r}')
