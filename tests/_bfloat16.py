"""Independent numpy references for a lower-precision sampler: bfloat16 rounding by integer
bit arithmetic on the float32 words (round to nearest, ties to even) and a float64
log-softmax."""

import numpy as np


def bf16_round(x) -> np.ndarray:
    """float32 → the nearest bfloat16 (ties to even), returned as float32."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def np_log_softmax(logits) -> np.ndarray:
    """log-softmax over the last axis, in float64."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))
