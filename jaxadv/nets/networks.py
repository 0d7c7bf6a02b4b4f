"""Actor-critic MLPs (with an optional convolutional layer for image observations) behind an
``(init, apply)`` pair of pure functions.

``apply(params, obs[*B, obs_dim]) -> (policy, critic)`` runs actor and critic in
one call. ``policy`` is the categorical ``logits [*B, A]`` or the Gaussian
``(mean [*B, D], log_std [*B, D])``; ``critic`` is ``V(s) [*B]``, or
``Q(s, ·) [*B, A]`` when the network is built with ``q_critic=True`` (the ``qv``
estimator). Flax linen modules live inside; parameters are plain pytrees outside. With
``image_shape = (H, W, C)`` each torso starts with a 3 × 3 convolution of 16 channels (ReLU,
stride 1, as MinAtar's own networks) on the observation reshaped to ``[*B, H, W, C]``.

Weights use an orthogonal initialiser (√2 hidden, 0.01 policy, 1.0 critic, as is
customary for PPO) written with plain ``jnp`` ops — classical Gram–Schmidt with
re-orthogonalisation — instead of flax's QR-based one: batched LAPACK calls can
deadlock jaxlib 0.10 on CPU when ``init`` is ``vmap``-ed over seeds (docs/design.md,
"Batched LAPACK under vmap"). ``init`` draws all kernels at once
(:func:`orthogonal_matrices`), which compiles in a fraction of the time of one initialiser
per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["GRU", "ActorCritic", "Conv3x3", "Network", "RecurrentActorCritic", "make_network",
           "orthogonal", "orthogonal_matrices"]

Params = Any


def _orthonormal_columns(a: jax.Array, valid: jax.Array | int | None = None) -> jax.Array:
    """Orthonormalise the first ``valid`` (default: all) columns of ``a [m, n]`` (m ≥ n) by
    Gram–Schmidt, twice per column; the columns after them come out zero.

    Equals the Q of a QR decomposition whose R has a positive diagonal, so a
    Gaussian ``a`` gives a Haar-distributed Q. Plain ``jnp`` ops in a ``fori_loop``.
    """
    n = a.shape[1]
    valid = n if valid is None else valid
    cols = jnp.arange(n)

    def body(j, q):
        v = a[:, j]
        done = (cols < j).astype(a.dtype)  # the columns already orthonormalised
        for _ in range(2):  # "twice is enough" (Giraud et al., 2005)
            v = v - q @ (done * (q.T @ v))
        v = v * jnp.where(j < valid, jax.lax.rsqrt(jnp.sum(v * v)), 0.0)
        return q.at[:, j].set(v)

    return jax.lax.fori_loop(0, n, body, jnp.zeros_like(a))


def orthogonal_matrices(key: jax.Array, shapes: Sequence[tuple[int, int]],
                        scales: Sequence[float]) -> list[jax.Array]:
    """Independent (semi-)orthogonal float32 matrices of ``shapes`` times ``scales``, the
    law of :func:`orthogonal` for each, drawn together: one normal draw ``[K, m, n]`` (each
    matrix, turned tall, in the top-left corner of a zero ``m × n`` block) and one
    Gram–Schmidt loop ``vmap``-ed over the K blocks. Compiling it costs a fraction of K
    separate initialisers, each with its own random-number kernel and loop.

    >>> import jax, jax.numpy as jnp
    >>> a, b = orthogonal_matrices(jax.random.key(0), [(5, 3), (2, 4)], [1.0, 3.0])
    >>> bool(jnp.allclose(a.T @ a, jnp.eye(3), atol=1e-5)), bool(jnp.allclose(b @ b.T, 9 * jnp.eye(2), atol=1e-4))
    (True, True)
    """
    tall = [(max(r, c), min(r, c)) for r, c in shapes]
    m, n = max(t for t, _ in tall), max(w for _, w in tall)
    inside = np.stack([(np.arange(m)[:, None] < t) & (np.arange(n)[None, :] < w) for t, w in tall])
    a = jax.random.normal(key, (len(tall), m, n), jnp.float32) * inside
    q = jax.vmap(_orthonormal_columns)(a, jnp.array([w for _, w in tall]))
    return [scale * (q[i, :t, :w] if r >= c else q[i, :t, :w].T)
            for i, ((r, c), (t, w), scale) in enumerate(zip(shapes, tall, scales, strict=True))]


def orthogonal(scale: float = 1.0) -> Callable:
    """A flax initialiser of (semi-)orthogonal ``[fan_in, fan_out]`` matrices times ``scale``.

    Same distribution as ``jax.nn.initializers.orthogonal(scale)``, without LAPACK.

    >>> import jax, jax.numpy as jnp
    >>> w = orthogonal(2.0)(jax.random.key(0), (5, 3))
    >>> bool(jnp.allclose(w.T @ w, 4.0 * jnp.eye(3), atol=1e-5))
    True
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        if len(shape) != 2:
            raise ValueError(f"orthogonal init needs a 2-D shape, got {tuple(shape)}")
        rows, cols = shape
        a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
        q = _orthonormal_columns(a)
        q = q if rows >= cols else q.T
        return (scale * q).astype(dtype)

    return init


def _dense(features: int, name: str) -> nn.Dense:
    """A dense layer whose kernel :func:`make_network`'s ``init`` draws (zeros until then)."""
    return nn.Dense(features, kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.zeros, name=name)


class Conv3x3(nn.Module):
    """A 3 × 3 "SAME" convolution, stride 1, of ``[*B, H, W, C]`` images to ``features``
    channels, computed as one matrix product of the 9 shifted copies of the zero-padded image
    (``[*B, H, W, 9C] @ [9C, F]``): the same numbers as ``flax.linen.Conv`` (kernel
    ``[3, 3, C, F]``), but a GEMM, which XLA on CPU runs tens of times faster than its
    convolution under ``vmap``. Kernel created as zeros (:func:`make_network` draws it)."""

    features: int

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        *batch, h, w, c = image.shape
        kernel = self.param("kernel", nn.initializers.zeros, (3, 3, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        pad = [(0, 0)] * len(batch) + [(1, 1), (1, 1), (0, 0)]
        padded = jnp.pad(image, pad)
        patches = jnp.concatenate([padded[..., a:a + h, b:b + w, :] for a in range(3)
                                   for b in range(3)], axis=-1)  # [*B, H, W, 9C]
        out = patches @ kernel.reshape(9 * c, self.features)
        return out + bias.reshape((1,) * (out.ndim - 1) + (self.features,))


class _Affine(nn.Module):
    """The ``(kernel [fan_in, features], bias [features])`` of one affine map, created as
    zeros (:func:`make_network` draws the kernel), for modules that fuse several maps."""

    fan_in: int
    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array | None]:
        kernel = self.param("kernel", nn.initializers.zeros, (self.fan_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
        return kernel, bias


GRU_GATES = ("ir", "iz", "in", "hr", "hz", "hn")
"""The names of a :class:`GRU`'s six kernels: input (``i``) and hidden (``h``) maps of the
reset (``r``), update (``z``) and candidate (``n``) gates."""


class GRU(nn.Module):
    """A gated recurrent unit (Cho et al., 2014, in the form of PyTorch and flax's
    ``GRUCell``) of ``features`` units: ``(h [*B, H], x [*B, I]) -> h' [*B, H]``::

        r = σ(x W_ir + b_ir + h W_hr)          z = σ(x W_iz + b_iz + h W_hz)
        n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h

    The three input maps run as one ``[I, 3H]`` matrix product and the three hidden maps as
    one ``[H, 3H]`` product. Kernels created as zeros (:func:`make_network` draws them
    orthogonal, scale 1), biases zero."""

    features: int

    @nn.compact
    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        size = self.features
        maps = {g: {k: v for k, v in zip(("kernel", "bias"), _Affine(
            x.shape[-1] if g[0] == "i" else size, size, g not in ("hr", "hz"), name=g)())
            if v is not None} for g in GRU_GATES}
        return gru_state(*gru_weights(maps), h, x)


def _bias(b: jax.Array, ndim: int) -> jax.Array:
    """A bias ``[F]`` shaped to add to ``[*B, F]`` (``ndim`` axes) without rank promotion."""
    return b.reshape((1,) * (ndim - 1) + b.shape)


def gru_weights(p: dict) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A :class:`GRU`'s parameters ``p`` (``{gate: {"kernel", "bias"}}``) as the fused
    ``(w_i [I, 3H], b_i [3H], w_h [H, 3H], b_hn [H])``."""
    w_i = jnp.concatenate([p[g]["kernel"] for g in ("ir", "iz", "in")], axis=1)
    b_i = jnp.concatenate([p[g]["bias"] for g in ("ir", "iz", "in")])
    w_h = jnp.concatenate([p[g]["kernel"] for g in ("hr", "hz", "hn")], axis=1)
    return w_i, b_i, w_h, p["hn"]["bias"]


def gru_state(w_i: jax.Array, b_i: jax.Array, w_h: jax.Array, b_hn: jax.Array, h: jax.Array,
              x: jax.Array | None = None, gx: jax.Array | None = None) -> jax.Array:
    """The next state ``h' [*B, H]`` of a :class:`GRU` (weights from :func:`gru_weights`) from
    ``h [*B, H]`` and the input ``x [*B, I]``, or its input maps ``gx = x w_i + b_i`` computed
    beforehand (for a whole sequence at once)."""
    size = h.shape[-1]
    if gx is None:
        x = cast(jax.Array, x)  # given where gx is not
        gx = x @ w_i + _bias(b_i, x.ndim)  # [*B, 3H]
    gh = h @ w_h  # [*B, 3H]
    r = jax.nn.sigmoid(gx[..., :size] + gh[..., :size])
    z = jax.nn.sigmoid(gx[..., size:2 * size] + gh[..., size:2 * size])
    n = jnp.tanh(gx[..., 2 * size:] + r * (gh[..., 2 * size:] + _bias(b_hn, h.ndim)))
    return (1.0 - z) * n + z * h


def _heads(module: nn.Module, actor_h: jax.Array, critic_h: jax.Array):
    """The policy head (logits, or the Gaussian's mean and state-independent log-std) and the
    critic head (``V [*B]``, or ``Q [*B, A]`` with ``q_critic``) of an actor-critic module."""
    out = _dense(module.num_outputs, "policy_head")(actor_h)
    critic_width = module.num_outputs if module.q_critic else 1
    critic = _dense(critic_width, "critic_head")(critic_h)
    critic = critic if module.q_critic else critic[..., 0]
    if module.discrete:
        return out, critic
    log_std = module.param("log_std", nn.initializers.zeros, (module.num_outputs,))
    return (out, jnp.broadcast_to(log_std, out.shape)), critic


def _kernel_scale(layer: str) -> float:
    """The orthogonal init's scale of a layer's kernel: 0.01 for the policy head, 1 for the
    critic head and a GRU's gates, √2 for the hidden layers (as is customary for PPO)."""
    if layer in GRU_GATES:
        return 1.0
    return {"policy_head": 0.01, "critic_head": 1.0}.get(layer, 2.0**0.5)


class ActorCritic(nn.Module):
    """MLP actor and critic, with separate torsos or one shared torso.

    Attributes:
      num_outputs: number of discrete actions A, or the action dimension D.
      discrete: categorical (logits) or diagonal Gaussian (mean, state-independent log_std).
      hidden: widths of the hidden layers.
      activation: "tanh" or "relu".
      shared_torso: one torso feeds both heads.
      q_critic: the critic outputs Q(s, ·) (A values) instead of V(s).

      image_shape: ``(H, W, C)`` of an image observation (flattened in ``obs``): each torso
        starts with a 3 × 3 convolution of 16 channels; ``None``: no convolution.

    Its kernels are created as zeros; :func:`make_network`'s ``init`` replaces them with
    orthogonal matrices times :func:`_kernel_scale` (a convolution's ``[3, 3, C, 16]`` kernel
    as a ``[9C, 16]`` matrix).
    """

    num_outputs: int
    discrete: bool = True
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    shared_torso: bool = False
    q_critic: bool = False
    image_shape: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, obs: jax.Array):
        act = {"tanh": nn.tanh, "relu": nn.relu}[self.activation]

        def torso(x, name):
            if self.image_shape is not None:
                image = x.reshape(*x.shape[:-1], *self.image_shape)
                x = nn.relu(Conv3x3(16, name=f"{name}_conv")(image)).reshape(*x.shape[:-1], -1)
            for i, width in enumerate(self.hidden):
                x = act(_dense(width, f"{name}_{i}")(x))
            return x

        actor_h = torso(obs, "torso" if self.shared_torso else "actor")
        critic_h = actor_h if self.shared_torso else torso(obs, "critic")
        return _heads(self, actor_h, critic_h)


class RecurrentActorCritic(nn.Module):
    """A recurrent actor-critic: one torso of dense layers, then a :class:`GRU` of
    ``hidden[-1]`` units whose output feeds both heads (as PureJaxRL's ``ppo_rnn``).

    ``(obs [*B, obs_dim], h [*B, H]) -> ((policy, critic), h' [*B, H])``; the attributes are
    :class:`ActorCritic`'s."""

    num_outputs: int
    discrete: bool = True
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    q_critic: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, h: jax.Array):
        act = {"tanh": nn.tanh, "relu": nn.relu}[self.activation]
        x = obs
        for i, width in enumerate(self.hidden[:-1]):
            x = act(_dense(width, f"torso_{i}")(x))
        h = GRU(self.hidden[-1], name="gru")(h, x)
        return _heads(self, h, h), h


def _recurrent_unroll(module: RecurrentActorCritic, params: Params, obs: jax.Array, h0: jax.Array,
                      done: jax.Array, start: jax.Array | None) -> tuple[Any, jax.Array]:
    """:meth:`Network.unroll` of a :class:`RecurrentActorCritic`: the dense torso and the GRU's
    input maps of every step in one batched product each, then only the recurrence
    ``h @ w_h`` in the ``lax.scan``, then both heads on every step's state at once (the same
    numbers as stepping the module)."""
    p = params["params"]
    act = {"tanh": jnp.tanh, "relu": jax.nn.relu}[module.activation]
    affine = lambda x, layer: x @ layer["kernel"] + _bias(layer["bias"], x.ndim)
    x = obs
    for i in range(len(module.hidden) - 1):
        x = act(affine(x, p[f"torso_{i}"]))
    w_i, b_i, w_h, b_hn = gru_weights(p["gru"])
    gx = x @ w_i + _bias(b_i, x.ndim)  # [T, B, 3H]

    def body(h, xs):
        g, d, t = xs
        if start is not None:
            h = jnp.where((t == start)[:, None], jax.lax.stop_gradient(h), h)
        h = gru_state(w_i, b_i, w_h, b_hn, h, gx=g)
        return jnp.where(d[:, None], jnp.zeros_like(h), h), h

    _, hs = jax.lax.scan(body, h0, (gx, done, jnp.arange(obs.shape[0])))  # [T, B, H]
    out = affine(hs, p["policy_head"])
    critic = affine(hs, p["critic_head"])
    critic = critic if module.q_critic else critic[..., 0]
    if module.discrete:
        return out, critic
    return (out, jnp.broadcast_to(p["log_std"], out.shape)), critic


class Network(NamedTuple):
    """A pure ``init(key, obs) -> params`` and ``apply(params, obs) -> (policy, critic)``.

    A recurrent network (``hidden_size`` H > 0) acts with ``step(params, obs [*B, ...],
    h [*B, H]) -> ((policy, critic), h')`` from ``h = 0`` at each episode's first step, and
    re-evaluates sequences with ``unroll`` (:func:`unroll`); its ``apply`` raises, since its
    policy depends on the history."""

    init: Callable[[jax.Array, jax.Array], Params]
    apply: Callable[[Params, jax.Array], tuple[Any, jax.Array]]
    hidden_size: int = 0
    step: Callable | None = None
    module: Any = None

    def unroll(self, params: Params, obs: jax.Array, h0: jax.Array, done: jax.Array,
               start: jax.Array | None = None) -> tuple[Any, jax.Array]:
        """``(policy, critic)`` ``[T, B, ...]`` of a recurrent network along ``obs [T, B, ...]``
        from the hidden state ``h0 [B, H]``, the state set to zero after each step where
        ``done [T, B]`` (an episode ended there: the next observation starts a new one), as a
        rollout carried it. ``start [B]`` (optional): the step from which gradients flow
        into the carried state (the steps before it are a burn-in)."""
        return _recurrent_unroll(self.module, params, obs, h0, done, start)


def make_network(
    num_outputs: int,
    *,
    discrete: bool = True,
    hidden: tuple[int, ...] = (64, 64),
    activation: str = "tanh",
    shared_torso: bool = False,
    q_critic: bool = False,
    image_shape: tuple[int, ...] | None = None,
    recurrent: bool = False,
) -> Network:
    """Build the actor-critic ``(init, apply)`` pair (see :class:`ActorCritic`), or with
    ``recurrent`` a :class:`RecurrentActorCritic` (a GRU of ``hidden[-1]`` units; ``step``
    and ``unroll`` instead of ``apply``).

    >>> import jax, jax.numpy as jnp
    >>> net = make_network(2, hidden=(8,))
    >>> params = net.init(jax.random.key(0), jnp.zeros(4))
    >>> logits, value = net.apply(params, jnp.zeros((3, 4)))
    >>> logits.shape, value.shape
    ((3, 2), (3,))
    """
    if activation not in ("tanh", "relu"):
        raise ValueError(f"`activation` must be 'tanh' or 'relu', got {activation!r}")
    if image_shape is not None and (len(image_shape) != 3 or min(image_shape) < 1):
        raise ValueError(f"`image_shape` must be (H, W, C), got {image_shape!r}")
    if recurrent and (image_shape is not None or shared_torso or not hidden):
        raise ValueError("a recurrent network has one dense torso and no convolution, and "
                         "needs at least one hidden width (the GRU's)")
    module: nn.Module
    if recurrent:
        module = RecurrentActorCritic(num_outputs, discrete, tuple(hidden), activation, q_critic)
    else:
        module = ActorCritic(num_outputs, discrete, tuple(hidden), activation, shared_torso,
                             q_critic, None if image_shape is None else tuple(image_shape))
    size = hidden[-1] if recurrent else 0

    def init(key: jax.Array, obs: jax.Array) -> Params:
        inputs = (obs, jnp.zeros((*obs.shape[:-1], size), jnp.float32)) if recurrent else (obs,)
        params = module.init(key, *inputs)  # zero kernels: flax draws nothing
        leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
        kernels = [i for i, (path, _) in enumerate(leaves) if path[-1].key == "kernel"]
        shapes = [leaves[i][1].shape for i in kernels]  # a conv kernel as [9C, 16]
        drawn = orthogonal_matrices(key, [(int(np.prod(s[:-1])), s[-1]) for s in shapes],
                                    [_kernel_scale(leaves[i][0][-2].key) for i in kernels])
        values = [leaf for _, leaf in leaves]
        for i, kernel, shape in zip(kernels, drawn, shapes, strict=True):
            values[i] = kernel.reshape(shape)
        return jax.tree.unflatten(treedef, values)

    if not recurrent:
        # flax types apply's result as maybe (out, state), which it is only with mutable=
        return Network(init=init, apply=module.apply)  # type: ignore[arg-type]

    def apply(params: Params, obs: jax.Array):
        raise TypeError("a recurrent network's policy depends on its hidden state: use "
                        "`step(params, obs, h)` or `unroll`")

    return Network(init=init, apply=apply, hidden_size=size, step=module.apply, module=module)
