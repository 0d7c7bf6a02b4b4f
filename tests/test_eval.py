"""`jaxadv eval`: returns against a plain loop over the raw gymnax env, a restored policy
against what its run reported, the animation, read-only runs and bad directories refused."""

import csv
import hashlib
import json
import math

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxadv import cli
from jaxadv.cli.eval import check_render
from jaxadv.engine.evaluate import evaluate, load_run
from jaxadv.engine.train import EVAL_STREAM, HParams, TrainConfig, init, make_setup, make_trainer


def _files(directory):
    """``{relative path: SHA-256}`` of every file under ``directory``."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun") / "run"
    argv = ["train", "--seeds", "2", "--total-timesteps", "60000", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    return out


def _plain_greedy_episodes(network, params, key, n):
    """``[(return, length)]`` of ``n`` CartPole episodes by a Python loop stepping gymnax's own
    environment (no wrappers) with the argmax action, from the first states that
    :func:`jaxadv.engine.rollout.play_episodes` draws from ``key``."""
    raw, raw_params = gymnax.make("CartPole-v1")
    _, state = jax.vmap(raw.reset, in_axes=(0, None))(
        jax.random.split(jax.random.split(key)[0], n), raw_params)
    step = jax.jit(raw.step_env)
    act = jax.jit(lambda obs: jnp.argmax(network.apply(params, obs[None])[0][0]))
    episodes = []
    for i in range(n):
        s = jax.tree.map(lambda x, i=i: x[i], state)
        total, length, done = 0.0, 0, False
        while not done:
            _, s, reward, done, _ = step(jax.random.key(0), s, int(act(raw.get_obs(s))), raw_params)
            total, length = total + float(reward), length + 1
            done = bool(done) or length >= raw_params.max_steps_in_episode
        episodes.append((total, length))
    return episodes


@pytest.mark.fast_compile  # against a plain loop (conftest.py)
def test_greedy_returns_equal_a_plain_loop_over_the_raw_env():
    """Each episode's return and length equal those of a Python loop stepping gymnax's own
    CartPole from the same first state with the argmax action."""
    setup = make_setup(TrainConfig(hidden=(16,)))
    params = init(setup, jax.random.key(3), HParams()).params
    key, n = jax.random.key(4), 6
    got = jax.jit(lambda k: evaluate(setup, k, params, episodes=n, max_steps=500))(key)
    want = _plain_greedy_episodes(setup.network, params, key, n)
    assert [(float(r), int(n)) for r, n in zip(got.returns, got.lengths)] == want
    assert bool(got.finished.all())


EVERY = TrainConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 6, hidden=(16,))


@pytest.mark.fast_compile
@pytest.mark.product_emitters  # two different programs, bit for bit (conftest.py)
def test_eval_every_leaves_training_unchanged_and_evaluates_on_schedule():
    """--eval-every 2: the same parameters and metrics, bit for bit, as without; the greedy
    return at updates 2, 4, 6 equals the plain loop's mean over the same first states with
    that update's parameters; NaN at the others."""
    plain = make_trainer(EVERY)
    state, metrics = jax.jit(plain.train)(jax.random.key(0), HParams())
    config = EVERY.replace(eval_every=2, eval_episodes=3)
    evaluated = make_trainer(config)
    got_state, got = jax.jit(evaluated.train)(jax.random.key(0), HParams())
    same = lambda a, b: np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    unkey = lambda s: s._replace(key=jax.random.key_data(s.key))
    assert all(jax.tree.leaves(jax.tree.map(same, unkey(state), unkey(got_state))))
    assert all(same(metrics[k], got[k]) for k in metrics)
    assert np.isnan(got["eval_return"][0::2]).all() and np.isnan(got["eval_length"][0::2]).all()
    evaluated_setup = make_setup(config)
    states = [init(evaluated_setup, jax.random.key(0), HParams())]
    for _ in range(6):  # the parameters and key after each update, one update at a time
        states.append(jax.jit(evaluated.update)(states[-1], HParams())[0])
    for u in (2, 4, 6):
        s = states[u]
        episodes = _plain_greedy_episodes(evaluated_setup.network, s.params,
                                          jax.random.fold_in(s.key, EVAL_STREAM), 3)
        assert got["eval_return"][u - 1] == pytest.approx(np.mean([r for r, _ in episodes]))
        assert got["eval_length"][u - 1] == pytest.approx(np.mean([n for _, n in episodes]))


@pytest.mark.fast_compile
def test_eval_every_is_a_real_branch_under_vmap():
    """Vmapped over seeds, the evaluation stays a ``cond`` on the update count (not a select
    that would play the episodes at every update)."""
    trainer = make_trainer(EVERY.replace(eval_every=2))
    jaxpr = jax.make_jaxpr(jax.vmap(trainer.train, (0, None)))(
        jax.random.split(jax.random.key(0), 3), HParams())
    assert "cond[" in str(jaxpr)


@pytest.mark.fast_compile
def test_eval_every_falls_on_multiples_of_it_across_compiled_calls(tmp_path):
    """6 updates in two calls of 3 (one program): the second call evaluates at its first and
    third updates, 4 and 6, counting on from the first call's."""
    out = tmp_path / "run"
    argv = ["train", "--seeds", "2", "--num-envs", "4", "--num-steps", "32", "--total-timesteps",
            str(4 * 32 * 6), "--hidden", "8", "--chunk-updates", "3", "--eval-every", "2",
            "--eval-episodes", "2", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    evaluated = {int(r["update"]) for r in rows if r["eval_return"] != "nan"}
    assert evaluated == {2, 4, 6} and len(rows) == 2 * 6


# the run (a module fixture: set up before the marker applies) trains optimised; its policy's
# evaluation compiles fast (measured: 229.6 here, 232.9 optimised, against the run's 220.1)
@pytest.mark.fast_compile
def test_restored_policy_returns_what_its_run_reported(cartpole_run):
    """Sampling as in training, the restored final policy's mean return over seeds lies
    within noise of the run's own final return (the last tenth of its updates)."""
    summary = json.loads((cartpole_run / "summary.json").read_text())
    before = _files(cartpole_run)
    out = cartpole_run.parent / "sampled"
    argv = ["eval", str(cartpole_run), "--episodes", "50", "--policy", "sample", "--out", str(out),
            "--quiet"]
    assert cli.main(argv) == 0
    record = json.loads((out / "eval.json").read_text())
    assert _files(cartpole_run) == before  # evaluation writes nothing into the run
    assert record["checkpoint"]["update"] == summary["num_updates"]
    assert record["checkpoint"]["env_steps"] == summary["env_steps"]
    per_seed = record["per_seed"]
    assert [r["seed"] for r in per_seed] == [0, 1] and all(r["return"]["n"] == 50 for r in per_seed)
    pooled = record["all_episodes"]["return"]
    means = [r["return"]["mean"] for r in per_seed]
    assert record["over_seeds"]["return"]["mean"] == pytest.approx(np.mean(means))
    assert pooled["min"] <= min(means) and pooled["max"] >= max(means)
    reported = summary["final_return_mean"]
    assert reported > 100  # it learned something, so the comparison means something
    assert abs(record["over_seeds"]["return"]["mean"] - reported) < 0.15 * reported


@pytest.mark.fast_compile  # mechanics; the run trains optimised (as above)
def test_render_draws_each_step_and_records_the_episode(cartpole_run, tmp_path):
    gif = tmp_path / "policy.gif"
    argv = ["eval", str(cartpole_run), "--episodes", "4", "--render", str(gif),
            "--render-episodes", "2", "--frame-every", "50", "--out", str(tmp_path), "--quiet"]
    assert cli.main(argv) == 0
    drawn = json.loads((tmp_path / "eval.json").read_text())["render"]
    assert len(drawn["lengths"]) == 2 and all(1 <= n <= 500 for n in drawn["lengths"])
    assert drawn["frames"] == sum(math.ceil(n / 50) for n in drawn["lengths"])
    with Image.open(gif) as image:
        assert image.n_frames == drawn["frames"]


@pytest.mark.fast_compile  # mechanics; the run trains optimised (as above)
def test_eval_never_writes_into_the_run_and_refuses_what_it_cannot_use(cartpole_run, tmp_path, capsys):
    before = _files(cartpole_run)
    assert cli.main(["eval", str(tmp_path), "--quiet"]) == 2
    assert "holds no config.json" in capsys.readouterr().err
    (tmp_path / "chunks").mkdir()
    assert cli.main(["eval", str(tmp_path), "--quiet"]) == 2
    assert "it is a sweep's: name one of its points with --point P" in capsys.readouterr().err
    assert cli.main(["eval", str(cartpole_run), "--max-steps", "5", "--quiet",
                     "--out", str(tmp_path / "e")]) == 2
    assert "did not end within it" in capsys.readouterr().err
    assert cli.main(["eval", str(cartpole_run), "--render", "x.png", "--quiet"]) == 2
    assert "name a .gif or .mp4 file" in capsys.readouterr().err
    assert cli.main(["eval", str(cartpole_run), "--episodes", "0"]) == 2
    assert "episodes" in capsys.readouterr().err
    assert _files(cartpole_run) == before
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((cartpole_run / "config.json").read_text())
    with pytest.raises(ValueError, match="holds no checkpoint"):
        load_run(bare)


@pytest.mark.parametrize("env, name, message", [
    ("Tabular-v0", "a.gif", "does not draw Tabular-v0"),
    ("CartPole-v1", "a.png", "name a .gif or .mp4 file"),
    ("Sequence-v0", "a.gif", "name a .txt file"),
    ("Gridworld-v0", "a.gif", "name a .png, .svg or .pdf file"),
])
def test_render_files_that_cannot_be_drawn_are_refused(env, name, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        check_render(env, tmp_path / name)


@pytest.mark.fast_compile  # mechanics (conftest.py)
def test_a_sequence_run_evaluates_with_its_exact_match_and_renders_as_text(tmp_path):
    run = tmp_path / "seq"
    argv = ["sequence", "--num-digits", "3", "--prompt-length", "2", "--group-size", "2",
            "--prompts-per-update", "4", "--total-samples", "16", "--layers", "1", "--width", "16",
            "--heads", "2", "--samples-shown", "0", "--out", str(run), "--quiet"]
    assert cli.main(argv) == 0
    text = tmp_path / "responses.txt"
    argv = ["eval", str(run), "--episodes", "8", "--policy", "sample", "--render", str(text),
            "--render-episodes", "3", "--quiet"]
    assert cli.main(argv) == 0
    record = json.loads((run / "eval" / "eval.json").read_text())
    stats = record["per_seed"][0]
    assert 0.0 <= stats["exact_match"]["mean"] <= 1.0 and stats["return"]["n"] == 8
    lines = text.read_text().splitlines()
    assert len(lines) == 3 == record["render"]["frames"]
    assert all("→" in line and "\treward " in line for line in lines)


def _discounted_objective(width, height, slip, probs, gamma):
    """J(π) from the start cell of the gridworld of :func:`~jaxadv.envs.mdp.gridworld_mdp`, built
    again here cell by cell, with numpy's linear solve: V = (I − γ P_π)⁻¹ r_π."""
    num, goal = width * height, width * height - 1
    p, r = np.zeros((num, num)), np.zeros(num)
    for s in range(num - 1):  # the goal cell is never occupied
        row, col = divmod(s, width)
        for a, pa in enumerate(probs[s]):
            for d, (dr, dc) in enumerate(((-1, 0), (1, 0), (0, -1), (0, 1))):
                q = pa * ((1 - slip) * (d == a) + slip / 4)
                nr, nc = row + dr, col + dc
                nxt = nr * width + nc if 0 <= nr < height and 0 <= nc < width else s
                if nxt == goal:
                    r[s] += q
                else:
                    p[s, nxt] += q
    return np.linalg.solve(np.eye(num) - gamma * p, r)[0]


@pytest.fixture(scope="module")
def gridworld_run(tmp_path_factory):
    """A Gridworld-v0 run that learns: compiled optimised (a module fixture is set up before
    a test's ``fast_compile`` marker applies)."""
    run = tmp_path_factory.mktemp("grid") / "grid"
    argv = ["train", "--env", "Gridworld-v0", "--total-timesteps", "40000", "--seeds", "1",
            "--out", str(run), "--quiet"]
    assert cli.main(argv) == 0
    return run


@pytest.mark.fast_compile  # the evaluation and the picture; the run trains optimised (above)
def test_a_gridworld_run_trains_and_draws_its_policy(gridworld_run, tmp_path):
    run = gridworld_run
    picture = tmp_path / "policy.png"
    argv = ["eval", str(run), "--episodes", "16", "--render", str(picture), "--quiet"]
    assert cli.main(argv) == 0
    record = json.loads((run / "eval" / "eval.json").read_text())
    drawn = record["render"]
    probs = np.array(drawn["probs"])
    assert probs.shape == (25, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    j = _discounted_objective(5, 5, 0.1, probs, gamma=0.99)
    np.testing.assert_allclose(drawn["objective"], j, rtol=1e-3)
    uniform = _discounted_objective(5, 5, 0.1, np.full((25, 4), 0.25), gamma=0.99)
    assert j > 0.8 > uniform  # learned: the goal, 8 moves away, reached almost surely and soon
    assert record["over_seeds"]["length"]["mean"] < 12  # greedy: about the 8 moves, some slips
    with Image.open(picture) as image:
        assert image.format == "PNG" and min(image.size) > 300


@pytest.mark.fast_compile  # mechanics (conftest.py)
def test_a_sweep_point_evaluates_the_policies_the_sweep_trained(tmp_path, capsys):
    sweep = tmp_path / "sw"
    argv = ["sweep", "--grid.lr", "1e-3", "3e-3", "--grid.num-envs", "2", "4", "--seeds", "2",
            "--num-steps", "16", "--total-timesteps", "1024", "--hidden", "8", "--out", str(sweep),
            "--max-parallel", "2", "--quiet"]
    assert cli.main(argv) == 0
    before = _files(sweep)
    row = next(r for r in csv.DictReader((sweep / "sweep.csv").open()) if r["point"] == "2")
    assert cli.main(["eval", str(sweep), "--point", "2", "--episodes", "4", "--quiet"]) == 0
    record = json.loads((sweep / "eval" / "point2" / "eval.json").read_text())
    assert _files(sweep) == {**before, **{k: v for k, v in _files(sweep).items()
                                          if k.startswith("eval/")}}
    # the same point trained alone, from the same seeds: its final policies, evaluated
    config = TrainConfig(num_envs=int(row["num_envs"]), num_steps=16, total_timesteps=1024,
                         hidden=(8,))
    hp = HParams(lr=float(np.float32(row["lr"])))
    keys = jax.random.split(jax.random.key(0), 2)
    state, _ = jax.jit(jax.vmap(make_trainer(config).train, (0, None)))(keys, hp)
    setup = make_setup(config)
    play = lambda key, params: evaluate(setup, key, params, episodes=4, max_steps=500)
    want = jax.jit(jax.vmap(play))(jax.random.split(jax.random.key(0), 2), state.params)
    got = [s["return"]["mean"] for s in record["per_seed"]]
    np.testing.assert_array_equal(got, np.asarray(want.returns).mean(axis=1))
    assert record["point"] == 2 and record["hparams"]["lr"] == pytest.approx(float(row["lr"]))
    assert record["checkpoint"]["update"] == config.num_updates
    assert cli.main(["eval", str(sweep), "--point", "4", "--quiet"]) == 2
    assert "`point` must be an index in [0, 4)" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path), "--point", "0", "--quiet"]) == 2
    assert "is not a jaxadv sweep's directory" in capsys.readouterr().err
