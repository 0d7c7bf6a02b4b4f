"""The token-by-token sequence tasks against plain-Python targets and scores.

The references below rebuild everything from the prompt's digits with Python lists
and ints (``int(...)`` arithmetic for ``"add"``), independently of the module's
array code.
"""

import functools
import inspect
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv.envs import env_spec, make
from jaxadv.envs import sequence as seq
from jaxadv.envs import token as token_module
from jaxadv.envs.sequence import SequenceTask, decode, last_token_position, score, target_for
from jaxadv.envs.token import (
    TokenEnv,
    check_token_env,
    decode_tokens,
    metric_keys,
    response_length,
    token_env,
)

pytestmark = pytest.mark.fast_compile  # checks against references and mechanics (conftest.py)

# ---------------------------------------------------------------- plain-Python references


def _ref_target(digits, task, num_digits, k=None):
    """Target digits of a prompt given as a list of digits (``"add"``: the 2k operand digits)."""
    if task == "reverse":
        return digits[::-1]
    if task == "sort":
        return sorted(digits)
    value = lambda ds: sum(d * num_digits**i for i, d in enumerate(reversed(ds)))
    total = value(digits[:k]) + value(digits[k:])
    out = []
    for _ in range(k + 1):  # exactly k + 1 digits, leading zero allowed
        out.append(total % num_digits)
        total //= num_digits
    assert total == 0
    return out[::-1]


def _ref_score(target, response, reward, length_penalty=0.0, max_len=None):
    """(reward, exact) of a response (digits, EOS excluded) — the spec, loop by loop."""
    max_len = len(response) if max_len is None else max_len
    exact = 1.0 if list(response) == list(target) else 0.0
    if reward == "exact":
        value = exact
    else:
        hits = 0
        for i in range(len(target)):
            if i < len(response) and response[i] == target[i]:
                hits += 1
        value = hits / max(len(target), len(response))
    return value - length_penalty * len(response) / max_len, exact


def _prompt_digits(prompt, env):
    """The prompt region's digits (PAD and PLUS dropped), as a list."""
    return [int(t) for t in prompt if int(t) < env.num_digits]


# Shared environments: gymnax jits `step`/`reset` per env instance, so reusing a few
# instances (and one batch size) keeps the compile count — the cost of this file — low.
_CONFIGS = {
    "reverse": dict(task="reverse", prompt_length=5, min_prompt_length=1, reward="partial"),
    "sort": dict(task="sort", prompt_length=4, min_prompt_length=2, num_digits=5),
    "add": dict(task="add", prompt_length=4, response_length=3),  # no room for EOS
    "add_base3": dict(task="add", prompt_length=6, num_digits=3),
}
_N = 1000  # envs in every batched call


@functools.cache
def _env(name):
    return SequenceTask(**_CONFIGS[name])


@functools.cache
def _jitted(name):
    env = _env(name)
    return jax.jit(jax.vmap(env.reset, (0, None))), jax.jit(jax.vmap(env.step, (0, 0, 0, None)))


def _batched_reset(name, params=None, seed=0):
    env = _env(name)
    keys = jax.random.split(jax.random.key(seed), _N)
    return _jitted(name)[0](keys, env.default_params if params is None else params)


def _one(state, i):
    """Environment ``i`` of a batched state (the same shapes and dtypes as an unbatched one)."""
    return jax.tree.map(lambda x: x[i], state)


# ---------------------------------------------------------------- reset: prompts and targets


@pytest.mark.parametrize("name", list(_CONFIGS))
def test_targets_match_python_reference_over_random_prompts(name):
    env, kwargs = _env(name), _CONFIGS[name]
    pad, plus, sep = env.tokens.pad, env.tokens.plus, env.tokens.sep
    P, R = env.prompt_size, env.response_length
    obs, state = _batched_reset(name)
    obs, prompt = np.asarray(obs), np.asarray(state.prompt)
    target, target_len = np.asarray(state.target), np.asarray(state.target_length)
    assert obs.shape == (_N, P + 1 + R) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[:, :P], prompt)
    assert np.all(obs[:, P] == sep) and np.all(obs[:, P + 1 :] == pad)  # empty response
    lengths = set()
    for i in range(400):  # the reference loop on 400 of them
        if env.task == "add":
            k = env.prompt_length // 2
            assert prompt[i, k] == plus and np.all(np.delete(prompt[i], k) < env.num_digits)
            ref = _ref_target(_prompt_digits(prompt[i], env), "add", env.num_digits, k)
        else:
            n = int(np.sum(prompt[i] != pad))
            lengths.add(n)
            assert np.all(prompt[i, : P - n] == pad) and np.all(prompt[i, P - n :] < env.num_digits)
            ref = _ref_target(_prompt_digits(prompt[i], env), env.task, env.num_digits)
        assert int(target_len[i]) == len(ref)
        assert target[i, : len(ref)].tolist() == ref
        assert np.all(target[i, len(ref) :] == pad)
    if env.task != "add":  # every prompt length in [min, max] occurs
        assert lengths == set(range(kwargs["min_prompt_length"], env.prompt_length + 1))


def test_add_carries_through_every_digit():
    # 999 + 001 = 1000; in base 3: 222 + 222 = 1221 (26 + 26 = 52 = 1·27 + 2·9 + 2·3 + 1)
    t, n = target_for(jnp.array([9, 9, 9, 13, 0, 0, 1]), task="add", num_digits=10)
    assert t.tolist() == [1, 0, 0, 0] and int(n) == 4
    t, _ = target_for(jnp.array([2, 2, 2, 6, 2, 2, 2]), task="add", num_digits=3)
    assert t.tolist() == [1, 2, 2, 1]


def test_min_prompt_length_is_a_param():
    """Changing it in the params (traced: no new compile) changes the prompt lengths drawn."""
    env = _env("sort")
    assert int(env.default_params.min_prompt_length) == 2
    assert int(SequenceTask("sort", prompt_length=4).default_params.min_prompt_length) == 4
    _, state = _batched_reset("sort", env.default_params.replace(min_prompt_length=4))
    assert set(np.asarray(state.target_length).tolist()) == {4}


# ---------------------------------------------------------------- scoring


_TARGET = [3, 1, 4]
_CASES = {  # name: response digits (EOS excluded); hand-worked (exact, partial) in comments
    "correct": [3, 1, 4],  # 1, 3/3
    "too_short": [3, 1],  # 0, 2/3
    "too_long": [3, 1, 4, 1],  # 0, 3/4
    "wrong_digit": [3, 9, 4],  # 0, 2/3
    "immediate_eos": [],  # 0, 0/3
}
_HAND = {
    "correct": (1.0, 1.0),
    "too_short": (0.0, 2 / 3),
    "too_long": (0.0, 3 / 4),
    "wrong_digit": (0.0, 2 / 3),
    "immediate_eos": (0.0, 0.0),
}


def _padded(tokens, size, pad=12, eos=11):
    return jnp.array([*tokens, eos] + [pad] * (size - len(tokens) - 1))[:size]


@pytest.mark.parametrize("name", list(_CASES))
@pytest.mark.parametrize("reward", ["exact", "partial"])
@pytest.mark.parametrize("length_penalty", [0.0, 0.5])
def test_score_handcrafted_responses(name, reward, length_penalty):
    response, R = _CASES[name], 5
    target = jnp.array([*_TARGET, 12, 12])  # PAD-padded like SequenceState.target
    got, exact = score(
        target,
        3,
        _padded(response, R),
        len(response),
        reward=reward,
        length_penalty=length_penalty,
        max_response_length=R,
    )
    hand_exact, hand_partial = _HAND[name]
    hand = (hand_exact if reward == "exact" else hand_partial) - length_penalty * len(response) / R
    ref = _ref_score(_TARGET, response, reward, length_penalty, R)
    np.testing.assert_allclose(float(got), hand, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(got), ref[0], rtol=1e-6, atol=1e-7)
    assert float(exact) == hand_exact == ref[1]


@pytest.mark.parametrize("name", ["reverse", "sort"])  # reward "partial", "exact"
def test_stepping_handcrafted_responses_gives_the_same_rewards(name):
    """Each response above, stepped through the env on a state with target 314, then EOS."""
    env = _env(name)
    params = env.default_params.replace(length_penalty=0.3)
    _, batch = _batched_reset(name)
    state0 = _one(batch, 0)
    target = jnp.array(_TARGET + [env.tokens.pad] * (env.target_size - 3), jnp.int32)
    state0 = state0.replace(target=target, target_length=jnp.array(3, jnp.int32))
    responses = {k: v for k, v in _CASES.items() if all(d < env.num_digits for d in v)}
    responses["wrong_digit"] = [3, 0, 4]  # 9 is not a digit for D = 5
    for case, response in responses.items():
        state = state0
        for t, action in enumerate([*response, env.num_digits]):
            _, state, r, term, trunc, info = env.step(jax.random.key(t), state, action, params)
            if t < len(response):
                assert not bool(term) and float(r) == 0.0 and float(info["exact_match"]) == 0.0
        ref = _ref_score(_TARGET, response, env.reward, 0.3, env.response_length)
        assert bool(term) and not bool(trunc), case
        np.testing.assert_allclose(float(r), ref[0], rtol=1e-6, atol=1e-7, err_msg=case)
        assert float(info["exact_match"]) == ref[1]
        assert int(info["response_length"]) == len(response)


def test_score_matches_reference_on_random_batches():
    rng = np.random.default_rng(0)
    B, T, R = 300, 4, 6
    m = rng.integers(1, T + 1, B)
    n = rng.integers(0, R + 1, B)
    target = np.full((B, T), 12)
    response = np.full((B, R), 12)
    for i in range(B):
        c = min(n[i], m[i])
        target[i, : m[i]] = rng.integers(0, 3, m[i])  # few digits: many hits
        response[i, : n[i]] = rng.integers(0, 3, n[i])
        response[i, :c] = np.where(rng.random(c) < 0.7, target[i, :c], response[i, :c])
    for reward in ("exact", "partial"):
        got, exact = score(target, m, response, n, reward=reward, length_penalty=0.2)
        got, exact = np.asarray(got), np.asarray(exact)
        for i in range(B):
            ref = _ref_score(
                target[i, : m[i]].tolist(), response[i, : n[i]].tolist(), reward, 0.2, R
            )
            np.testing.assert_allclose(got[i], ref[0], rtol=1e-6, atol=1e-7)
            assert exact[i] == ref[1]
    # one target and length for the whole batch (explicit broadcasting)
    got, _ = score(target[0], int(m[0]), response, n, reward="partial")
    assert got.shape == (B,)


# ---------------------------------------------------------------- episodes


@pytest.mark.parametrize("name", ["reverse", "sort", "add"])
def test_optimal_policy_scores_one_and_terminates_after_eos(name):
    env = _env(name)
    params = env.default_params
    obs_batch, batch = _batched_reset(name, seed=1)
    for i in range(3):
        obs, state = obs_batch[i], _one(batch, i)
        m = int(state.target_length)
        room_for_eos = env.response_length > m  # "add" here: R = 3 = m, the episode ends at m
        actions = state.target[:m].tolist() + [env.num_digits] * room_for_eos
        for t, action in enumerate(actions):
            assert int(last_token_position(obs, env.tokens.pad)) == env.prompt_size + t
            obs, state, r, term, trunc, info = env.step(jax.random.key(t), state, action, params)
            if t < len(actions) - 1:
                assert not bool(term) and float(r) == 0.0
        assert bool(term) and not bool(trunc)
        assert float(r) == 1.0 and float(info["exact_match"]) == 1.0
        assert int(info["response_length"]) == m
        final = np.asarray(info["final_observation"])
        if room_for_eos:
            assert final[env.prompt_size + 1 + m] == env.tokens.eos
        assert int(last_token_position(final, env.tokens.pad)) == env.prompt_size + len(actions)
        assert int(state.time) == 0  # auto-reset after the final step


def test_writing_response_length_digits_terminates():
    env = _env("reverse")  # R = 6
    params = env.default_params
    _, batch = _batched_reset("reverse", seed=3)
    i = int(np.argmax(np.asarray(batch.target_length) == 5))  # a full-length prompt
    state = _one(batch, i)
    target = state.target.tolist()
    response = [*target, 7]  # the right digits, then one too many
    for t, action in enumerate(response):
        _, state, r, term, trunc, info = env.step(jax.random.key(t), state, action, params)
        assert bool(term) == (t == 5) and not bool(trunc)
    ref = _ref_score(target, response, "partial")
    np.testing.assert_allclose(float(r), ref[0], rtol=1e-6)  # 5/6
    assert float(info["exact_match"]) == 0.0 and int(info["response_length"]) == 6
    assert int(last_token_position(info["final_observation"], env.tokens.pad)) == env.obs_length - 1


def test_vmapped_random_policy_over_1000_envs_matches_reference():
    """jit(vmap) reset and step of the raw env: each finished episode is scored like the reference."""
    name, env = "reverse", _env("reverse")
    params, R = env.default_params.replace(length_penalty=0.1), env.response_length
    obs, state = _batched_reset(name, seed=5)
    step = _jitted(name)[1]
    rng = np.random.default_rng(0)
    written = [[] for _ in range(_N)]
    target, target_len = np.asarray(state.target), np.asarray(state.target_length)
    targets = [target[i, : target_len[i]].tolist() for i in range(_N)]
    finished = np.zeros(_N, bool)
    for t in range(R):
        # EOS with probability 1/4, else a digit; the first digit mostly right
        actions = np.where(
            rng.random(_N) < 0.25, env.num_digits, rng.integers(0, env.num_digits, _N)
        )
        if t == 0:
            actions = np.where(rng.random(_N) < 0.5, target[:, 0], actions)
        keys = jax.random.split(jax.random.key(t), _N)
        obs, state, r, term, trunc, info = step(
            keys, state, jnp.asarray(actions, jnp.int32), params
        )
        assert obs.shape == (_N, env.obs_length) and r.shape == (_N,) and not bool(trunc.any())
        r, term = np.asarray(r), np.asarray(term)
        exact, length = np.asarray(info["exact_match"]), np.asarray(info["response_length"])
        for i in np.flatnonzero(~finished):
            if actions[i] != env.num_digits:
                written[i].append(int(actions[i]))
            if term[i]:
                ref = _ref_score(targets[i], written[i], "partial", 0.1, R)
                np.testing.assert_allclose(r[i], ref[0], rtol=1e-5, atol=1e-6)
                assert exact[i] == ref[1] and length[i] == len(written[i])
                finished[i] = True
            else:
                assert r[i] == 0.0 and exact[i] == 0.0 and length[i] == 0
    assert finished.all()  # every episode ends within R steps


def test_last_position_rule_with_variable_length_prompts():
    name, env = "reverse", _env("reverse")
    pad, P = env.tokens.pad, env.prompt_size
    obs, state = _batched_reset(name, seed=2)
    assert len(set(np.asarray(state.target_length).tolist())) == 5  # prompts of 1..5 digits
    for t in range(3):  # three digits written in every env
        got = np.asarray(last_token_position(obs, pad))
        ref = [max(j for j, tok in enumerate(row) if tok != pad) for row in np.asarray(obs)[:50]]
        assert got[:50].tolist() == ref and np.all(got == P + t)
        keys = jax.random.split(jax.random.key(t), _N)
        obs, state, *_ = _jitted(name)[1](
            keys, state, jnp.full(_N, t, jnp.int32), env.default_params
        )


# ---------------------------------------------------------------- make(), spaces, decoding


def test_make_gives_float_observations_and_discrete_actions():
    env, params = make("Sequence-v0", task="add", prompt_length=4, num_digits=7)
    L = (4 + 1) + 1 + (4 // 2 + 1 + 1)
    spec = env_spec(env, params)
    assert spec.discrete and spec.num_actions == 8 and spec.obs_dim == L
    assert env.unwrapped.vocab_size == 11 and env.tokens == (7, 8, 9, 10)
    N = 16
    keys = jax.random.split(jax.random.key(0), N)
    obs, state = jax.vmap(env.reset, (0, None))(keys, params)
    assert obs.shape == (N, L) and obs.dtype == jnp.float32

    def body(carry, key):  # a scan over steps: info must keep its keys and shapes
        obs, state = carry
        keys = jax.random.split(key, N)
        obs, state, r, term, trunc, info = jax.vmap(env.step, (0, 0, None, None))(
            keys, state, 0, params
        )
        return (obs, state), (
            r,
            term,
            trunc,
            info["exact_match"],
            info["response_length"],
            info["episode_done"],
        )

    _, (r, term, trunc, exact, length, done) = jax.jit(
        lambda c: jax.lax.scan(body, c, jax.random.split(jax.random.key(1), 9))
    )((obs, state))
    # always writing 0: the episode ends after R = 4 digits (too long), at steps 4 and 8
    assert np.asarray(term).sum(axis=0).tolist() == [2] * N and not bool(trunc.any())
    assert np.all(np.asarray(done) == np.asarray(term))
    assert np.all(np.asarray(length)[[3, 7]] == 4) and np.all(np.asarray(exact) == 0)
    assert np.all(np.asarray(r) == 0.0)  # "exact" reward: 0000 is never 3 digits


def test_decode():
    assert decode([1, 2, 13, 9, 9, 10, 1, 1, 1, 11, 12]) == "12+99 → 111<eos>"
    assert decode(np.array([12.0, 3, 1, 10, 1])) == "31 → 1"
    assert decode([11, 15, 12, 13, 14], num_digits=12) == "b+ → <eos>"
    env = SequenceTask("sort", prompt_length=3)
    assert env.decode(jnp.array([2, 0, 1, 10, 0, 1, 2, 11])) == "201 → 012<eos>"


# ---------------------------------------------------------------- validation and API


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(task="copy"), "`task`"),
        (dict(reward="dense"), "`reward`"),
        (dict(num_digits=1), "`num_digits`"),
        (dict(num_digits=2.5), "`num_digits`"),
        (dict(prompt_length=0), "`prompt_length`"),
        (dict(task="add", prompt_length=5), "`prompt_length`"),
        (dict(min_prompt_length=0), "`min_prompt_length`"),
        (dict(prompt_length=3, min_prompt_length=4), "`min_prompt_length`"),
        (dict(task="add", prompt_length=4, min_prompt_length=2), "`min_prompt_length`"),
        (dict(prompt_length=4, response_length=3), "`response_length`"),
        (dict(length_penalty=-0.1), "`length_penalty`"),
        (dict(length_penalty=True), "`length_penalty`"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SequenceTask(**kwargs)
    with pytest.raises(ValueError, match=name):
        make("Sequence-v0", **kwargs)


def test_bad_mode_in_pure_functions():
    with pytest.raises(ValueError, match="`reward`"):
        score(jnp.zeros(3), 3, jnp.zeros(3), 3, reward="sum")
    with pytest.raises(ValueError, match="`task`"):
        target_for(jnp.zeros(3), task="copy", num_digits=10)


def test_public_names_have_docstrings():
    for name in seq.__all__:
        assert inspect.getdoc(getattr(seq, name)), name


# ---------------------------------------------------------------- the TokenEnv protocol


def test_sequence_task_is_a_token_env():
    env, _ = make("Sequence-v0", task="sort", prompt_length=3)
    raw = env.unwrapped
    assert isinstance(raw, TokenEnv)
    assert token_env(env) is raw and token_env(raw) is raw
    assert check_token_env(env, name="Sequence-v0", demonstration=True) is raw
    assert (raw.vocab_size, raw.tokens.pad) == (14, 12)
    assert response_length(env) == raw.response_length == 4
    assert metric_keys(env) == ("exact_match", "response_length")
    obs = jnp.array([12, 2, 0, 1, 10, 0, 1, 2, 11.0])
    assert decode_tokens(env, obs) == raw.decode(obs) == "201 → 012<eos>"
    _, state = raw.reset(jax.random.key(0), raw.default_params)
    tokens, labels = raw.demonstration(state)  # the documented shapes and dtypes
    assert tokens.shape == labels.shape == (raw.obs_length,)
    assert tokens.dtype == jnp.float32 and labels.dtype == jnp.int32


def test_a_plain_gymnax_env_is_not_a_token_env():
    env, _ = make("CartPole-v1")
    assert token_env(env) is None and not isinstance(env.unwrapped, TokenEnv)
    message = (
        "`network` = 'transformer' needs a token environment (with vocab_size and tokens.pad, "
        "e.g. Sequence-v0); `env` = 'CartPole-v1' is not one"
    )
    with pytest.raises(ValueError) as raised:
        check_token_env(env, name="CartPole-v1")
    assert str(raised.value) == message
    with pytest.raises(ValueError, match="'CartPole-v1' is not one"):  # name defaults to env.name
        check_token_env(env)
    assert metric_keys(env) == () and response_length(env) == 0


class _MinimalTokenEnv:
    """Only the required members: ``vocab_size`` and ``tokens.pad``."""

    vocab_size = 5
    tokens = types.SimpleNamespace(pad=4)


def test_a_minimal_token_env_has_the_documented_defaults():
    env = _MinimalTokenEnv()
    assert isinstance(env, TokenEnv) and token_env(env) is env
    assert check_token_env(env, name="Minimal") is env
    assert metric_keys(env) == () and response_length(env) == 0
    assert decode_tokens(env, np.array([4, 4, 1, 0, 3.0])) == "1 0 3"  # ids, PAD dropped
    with pytest.raises(ValueError) as raised:
        check_token_env(env, name="Minimal", demonstration=True)
    assert str(raised.value) == (
        "`warm_start_steps` needs an env with demonstration(); `env` = 'Minimal' has none"
    )


def test_tokens_without_pad_is_not_a_token_env():
    env = types.SimpleNamespace(vocab_size=5, tokens=(1, 2))
    assert isinstance(env, TokenEnv)  # runtime_checkable only sees that the names exist
    assert token_env(env) is None
    with pytest.raises(ValueError, match="is not one"):
        check_token_env(env, name="no-pad")


def test_token_module_public_names_have_docstrings():
    for name in token_module.__all__:
        assert inspect.getdoc(getattr(token_module, name)), name
