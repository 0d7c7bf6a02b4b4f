"""The tables carry their capabilities (issue 31, items 1, 3 and 5).

* No module compares a string with an algorithm, estimator or network name: the rows of
  ALGORITHMS, ESTIMATORS and NETWORKS declare what they need and allow, and every check and
  choice reads them (an AST walk; the scan itself is checked on snippets that must be found).
* A row registered at run time is offered by ``jaxadv train``, ``sweep``, ``variance`` and
  ``sequence``; its declared needs are what TrainConfig checks; the variance tooling
  computes it (against numpy).
* No public name has two meanings across the package's modules (an AST scan of the module
  bodies; an alias must be the very same object), and the renamed ones still import, with a
  ``DeprecationWarning``.
"""

from __future__ import annotations

import ast
import collections
import importlib
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxadv
from jaxadv import cli
from jaxadv.engine.algorithms import ALGORITHMS
from jaxadv.engine.architectures import NETWORKS
from jaxadv.engine.estimators import ESTIMATORS, Estimator, EstimatorArgs, EstimatorInput
from jaxadv.engine.train import TrainConfig
from jaxadv.envs.sequence import SequenceTask
from jaxadv.nets.transformer import make_transformer
from jaxadv.science import exact, objective_exact, sequence_exact, variance

ROOT = pathlib.Path(jaxadv.__file__).parent
SMALL = {"num_envs": 4, "num_steps": 32, "total_timesteps": 4 * 32}

TABLES = {"engine/algorithms.py", "engine/estimators.py", "engine/architectures.py"}
"""The tables themselves, whose rows are keyed by the names."""
REFERENCES = {"testing.py", "cli/check.py"}
"""The conformance kit: independent reference implementations (numpy), which must not read
the tables they check, and its command line. They dispatch on the kit's own kinds
(jaxadv.testing.KINDS, SEQUENCE_KINDS, POLICY_LOSS_KINDS), some of which are spelled as an
estimator or algorithm is."""


def _names() -> set[str]:
    return set(ALGORITHMS) | set(ESTIMATORS) | set(NETWORKS)


def _name_constants(tree: ast.AST, names: set[str]) -> set[str]:
    """The variables assigned a tuple, list or set of string constants with one of ``names``
    among them (``_RESPONSE_MEAN = ("gspo", "gmpo")``)."""
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.List, ast.Set))
                and any(isinstance(e, ast.Constant) and e.value in names for e in node.value.elts)):
            found |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return found


def _name_comparisons(source: str, names: set[str]) -> list[tuple[int, str]]:
    """``(line, code)`` of every comparison (``==``, ``!=``, ``in``, ``not in``, a ``match``
    case) that has one of ``names`` as a string constant among its operands, or tests
    membership in a variable that holds such constants (:func:`_name_constants`)."""
    found = []
    tree = ast.parse(source)
    constants = _name_constants(tree, names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, ast.Name)
                   and right.id in constants for op, right in zip(node.ops, node.comparators)):
                found.append((node.lineno, ast.unparse(node)[:100]))
                continue
        elif isinstance(node, ast.match_case):
            operands = [node.pattern]
        else:
            continue
        if any(isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value in names
               for operand in operands for sub in ast.walk(operand)):
            found.append((node.lineno if hasattr(node, "lineno") else node.pattern.lineno,
                          ast.unparse(node)[:100] if isinstance(node, ast.Compare) else "case"))
    return found


@pytest.mark.parametrize("snippet, found", [
    ('if config.estimator == "remax":\n    pass', True),
    ('x = algo != "reinforce"', True),
    ('ok = estimator in ("gae", "vapo")', True),
    ('ok = "gru" == network', True),
    ('match name:\n    case "ppo":\n        pass', True),
    ('ok = kl_estimator == "k1"', False),  # not a table's name
    ('row = ESTIMATORS["remax"]', False),  # a lookup in the table, not a comparison
    ('ok = row.critic == "q"', False),  # a capability, not a name
    ('_MEAN = ("gspo", "gmpo")\nok = algo in _MEAN', True),  # a name kept in a variable
    ('DEFAULTS = ("gae", "td")\nrun(DEFAULTS)', False),  # names as defaults, not compared
])
def test_the_scan_finds_a_comparison_on_a_name(snippet, found):
    assert bool(_name_comparisons(snippet, _names())) is found


def test_no_module_compares_an_algorithm_estimator_or_network_name():
    names = _names()
    assert {"ppo", "remax", "gae", "mlp", "transformer"} <= names
    bad, scanned = [], 0
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in TABLES or rel in REFERENCES:
            continue
        scanned += 1
        bad += [f"jaxadv/{rel}:{line}: {code}" for line, code in _name_comparisons(path.read_text(), names)]
    assert scanned > 40
    assert not bad, "compare a row's declared field instead:\n" + "\n".join(bad)


# --- a row registered at run time -------------------------------------------------------

def _dummy_fn(x: EstimatorInput, args: EstimatorArgs) -> tuple[jax.Array, jax.Array]:
    """``λ r + V' − V``: reads the spec's λ, the reward and both values."""
    a = args.gae_lambda * x.reward + x.next_value - x.value
    return a, a + x.value


DUMMY = Estimator(_dummy_fn, "value", False, "a dummy row of the test", param="gae_lambda")


def _help(command: str, capsys) -> str:
    assert cli.main([command, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())


def test_a_registered_row_is_offered_by_train_sweep_variance_and_sequence(monkeypatch, capsys):
    commands = ("train", "sweep", "variance", "sequence")
    assert not any("dummy" in _help(c, capsys) for c in commands)
    monkeypatch.setitem(ESTIMATORS, "dummy", DUMMY)
    monkeypatch.setitem(ALGORITHMS, "dummyalgo",
                        ALGORITHMS["ppo"]._replace(summary="a dummy algorithm of the test"))
    train = _help("train", capsys)
    assert "dummy (a dummy row of the test)" in train
    assert "dummyalgo (a dummy algorithm of the test)" in train
    # the choices end with the new rows (after the table's last rows, whatever they are)
    last_estimator, last_algo = list(ESTIMATORS)[-2], list(ALGORITHMS)[-2]
    assert f",{last_estimator},dummy}}" in train and f",{last_algo},dummyalgo}}" in train
    four = ", ".join(name for name, row in ALGORITHMS.items() if row.update_epochs == 4)
    assert four.endswith(", dummyalgo") and f"4 for {four}; 1 for a2c" in train  # ppo's epochs
    clipping = ", ".join(name for name, row in ALGORITHMS.items() if row.clip_value)
    assert f"row clips it ({clipping})" in train and clipping.endswith(", dummyalgo")
    assert f",{last_estimator},dummy}}" in _help("sweep", capsys)  # --grid.estimator's
    variance_help = _help("variance", capsys)
    assert "dummy:LAMBDA (a dummy row of the test)" in variance_help
    assert re.search(r"--objectives \[\{[^{}]*,dummyalgo\}", variance_help)
    assert re.search(r"objectives: [^:;]*\bdummyalgo, their ratio", variance_help)
    sequence = _help("sequence", capsys)
    assert "dummy (a dummy row of the test)" in sequence
    assert "dummyalgo (a dummy algorithm of the test)" in sequence
    assert "dummyalgo: passes over each batch" in sequence  # several passes, as ppo's row


def test_train_config_checks_what_a_registered_row_declares(monkeypatch):
    monkeypatch.setitem(ESTIMATORS, "dummy", DUMMY._replace(sequence_level=True, critic="none",
                                                            min_group_size=3, continuous=False))
    monkeypatch.setitem(ALGORITHMS, "dummyalgo", ALGORITHMS["ppo"]._replace(episodic_only=True))
    with pytest.raises(ValueError, match=r"sequence-level estimator \(.*, dummy\)"):
        TrainConfig(estimator="dummy", **SMALL)
    with pytest.raises(ValueError, match=r"`estimator` = 'dummy' .* `group_size` must be >= 3, got 2"):
        TrainConfig(estimator="dummy", episodic=True, group_size=2, **SMALL)
    TrainConfig(estimator="dummy", episodic=True, group_size=4, **SMALL)
    with pytest.raises(ValueError, match="needs a discrete action space; `env` = 'Pendulum-v1'"):
        TrainConfig(env="Pendulum-v1", estimator="dummy", episodic=True, group_size=4, **SMALL)
    with pytest.raises(ValueError, match="`algo` = 'dummyalgo' weighs whole sequences"):
        TrainConfig(algo="dummyalgo", **SMALL)


def test_only_remax_declares_a_greedy_rollout_and_three_rows_need_groups():
    assert [n for n, row in ESTIMATORS.items() if row.greedy_rollout] == ["remax"]
    assert {n: row.min_group_size for n, row in ESTIMATORS.items() if row.min_group_size > 1} == {
        "grpo": 2, "drgrpo": 2, "rloo": 2}
    assert [n for n, row in ESTIMATORS.items() if not row.continuous] == ["qv"]


def _arrays(shape=(5, 3)):
    rng = np.random.default_rng(0)
    reward, value, next_value = (rng.normal(size=shape).astype(np.float32) for _ in range(3))
    terminated = np.zeros(shape, bool)
    terminated[2, 0] = True
    truncated = np.zeros(shape, bool)
    truncated[3, 1] = True
    return reward, value, next_value, terminated, truncated


@pytest.mark.parametrize("monte_carlo", [False, True])
def test_the_variance_tooling_computes_a_registered_row(monkeypatch, monte_carlo):
    monkeypatch.setitem(ESTIMATORS, "dummy", DUMMY._replace(monte_carlo=monte_carlo))
    assert "dummy" in variance.measurable_estimators()
    assert "dummy:LAMBDA" in variance.spec_forms()
    assert "dummy" in sequence_exact.sequence_estimators()
    spec = variance.parse_estimator("dummy:0.25:unweighted")
    assert spec == variance.EstimatorSpec("dummy", 0.25, False)
    for bad in ("dummy", "dummy:2", "dummy:0.5:1"):
        with pytest.raises(ValueError, match="estimator 'dummy"):
            variance.parse_estimator(bad)
    arrays = _arrays()
    reward, value, next_value = arrays[:3]
    got = variance.estimator_advantages(spec, *map(jnp.asarray, arrays), gamma=0.9)
    # a Monte Carlo row's return is the objective's: never bootstrapped here
    expected = 0.25 * reward + (0.0 if monte_carlo else next_value) - value
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6)


def test_mdp_report_measures_a_registered_row_as_the_row_it_copies(monkeypatch):
    """The whole report on a registered copy of gae's row: the same statistics as gae's."""
    monkeypatch.setitem(ESTIMATORS, "dummy", ESTIMATORS["gae"]._replace(summary="gae again"))
    mdp = exact.random_mdp(jax.random.key(0), 3, 2, termination=0.25)
    logits = jnp.zeros((3, 2))
    rows, _ = variance.mdp_report(jax.random.key(1), mdp, logits, estimators=["gae:0.5", "dummy:0.5"],
                                  batch_sizes=[4], num_batches=3, horizon=6)
    by_name = {r["estimator"]: r for r in rows}
    assert set(by_name) == {"gae:0.5", "dummy:0.5"}
    for key in ("bias", "variance", "mse", "cosine"):
        assert by_name["dummy:0.5"][key] == by_name["gae:0.5"][key]


@pytest.mark.fast_compile  # the same program for both rows (conftest.py)
def test_the_exact_objectives_measure_a_registered_algorithm_as_the_row_it_copies(monkeypatch):
    """A copy of gspo's row (a mean over responses, ``response_mean``) registered under a new
    name is offered by :func:`objective_rows` at HParams' clip ranges, and its on-policy
    population gradient is gspo's: every ratio is 1, so the clip ranges do not bind, and the
    normalisation is read from the row, not from the name."""
    monkeypatch.setitem(ALGORITHMS, "dummyalgo", ALGORITHMS["gspo"]._replace(summary="gspo again"))
    rows = objective_exact.objective_rows()
    assert list(rows)[:len(objective_exact.OBJECTIVES)] == list(objective_exact.OBJECTIVES)
    assert rows["dummyalgo"] == objective_exact.ExactObjective("dummyalgo", 0.2, 0.28)
    env = SequenceTask("reverse", num_digits=2, prompt_length=2, min_prompt_length=1)
    net = make_transformer(env.vocab_size, env.obs_length, env.num_actions, pad=env.tokens.pad,
                           layers=1, width=8, heads=2, value_head=False)
    params = net.init(jax.random.key(3), jnp.zeros(env.obs_length))
    prompts = sequence_exact.make_prompts(jax.random.key(4), env, 2)
    on_policy = objective_exact.Behaviour("on-policy", params, net.apply_all)
    grads, _ = jax.jit(lambda p: objective_exact.population_gradients(
        p, net.apply_all, env, prompts, on_policy._replace(params=p),
        objectives=["gspo", "dummyalgo"]))(params)
    grads = np.asarray(grads)
    assert np.abs(grads[0]).max() > 1e-3
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6, atol=1e-9)


# --- one name, one meaning ---------------------------------------------------------------

SAME_MEANING = {"main": "jaxadv.cli.main is the lazy entry point: it imports jaxadv.cli.app "
                        "and returns its main(argv)"}
"""Names defined twice for one meaning that cannot be the same object, with the reason."""


def _definitions() -> dict[str, list[str]]:
    """Every public name a module body defines (def, class, assignment) -> the modules."""
    defined = collections.defaultdict(list)
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(("jaxadv", *path.relative_to(ROOT).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                continue
            defined.update({n: [*defined[n], module] for n in names if not n.startswith("_")})
    return defined


def test_no_public_name_has_two_meanings():
    defined = _definitions()
    assert {"jaxadv.advantages", "jaxadv.engine.estimators"} <= set(defined["SEQUENCE_ESTIMATORS"])
    assert len(defined) > 300
    twice = []
    for name, modules in sorted(defined.items()):
        if len(modules) < 2 or name in SAME_MEANING:
            continue
        objects = [getattr(importlib.import_module(m), name) for m in modules]
        if any(o is not objects[0] for o in objects):
            twice.append(f"{name}: {', '.join(modules)}")
    assert not twice, "one name, two meanings (rename one, or re-export the same object):\n" + "\n".join(twice)


RENAMED = [  # (module, the name of 0.3.0, its new name)
    ("jaxadv.engine.algorithms", "policy_gradient_loss", "pg_policy_loss"),
    ("jaxadv.engine.algorithms", "gspo_loss", "gspo_policy_loss"),
    ("jaxadv.engine.algorithms", "cispo_loss", "cispo_policy_loss"),
    ("jaxadv.engine.algorithms", "sapo_loss", "sapo_policy_loss"),
    ("jaxadv.engine.algorithms", "gmpo_loss", "gmpo_policy_loss"),
    ("jaxadv.engine.algorithms", "icepop_loss", "icepop_policy_loss"),
    ("jaxadv.science.variance", "Estimator", "EstimatorSpec"),
    ("jaxadv.science.variance", "LEGACY_NAMES", "LEGACY_SPECS"),
    ("jaxadv.science.sequence_exact", "ESTIMATORS", "REPORT_ESTIMATORS"),
    ("jaxadv.science.sequence_exact", "LEGACY_NAMES", "LEGACY_ESTIMATORS"),
    ("jaxadv.cli.sequence", "OBJECTIVES", "OBJECTIVE_PRESETS"),
    ("jaxadv.testing", "Rollout", "RolloutArrays"),
    ("jaxadv.envs.sequence", "last_position", "last_token_position"),
]


@pytest.mark.parametrize("module, old, new", RENAMED)
def test_a_renamed_name_still_imports_with_a_deprecation_warning(module, old, new):
    mod = importlib.import_module(module)
    assert old not in mod.__all__ and new in mod.__all__
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated: use {new}"):
        assert getattr(mod, old) is getattr(mod, new)


def test_train_estimators_is_a_deprecated_tuple_of_the_tables_names():
    from jaxadv.engine import train
    with pytest.warns(DeprecationWarning, match="ESTIMATORS is deprecated"):
        assert tuple(ESTIMATORS) == train.ESTIMATORS
    with pytest.raises(AttributeError):
        train.NO_SUCH_NAME  # noqa: B018
