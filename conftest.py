"""Suite-wide settings: no silent rank promotion, float32 by default."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
