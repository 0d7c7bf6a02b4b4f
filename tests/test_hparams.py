"""One definition per hyperparameter (issue 31): each ``HParams`` field's default, range and
doc live in its field metadata (``HPARAM_SPECS``), and validation, ``jaxadv sweep
--grid.FIELD``, PBT's bounds and ``jaxadv sequence``'s flags read them there.

The ranges below are written out again, independently, from the documentation (README,
docs/cli, the papers' definitions), so that a spec that drifts fails here.
"""

import dataclasses
import importlib
import inspect
import json
import math
import pkgutil
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tyro

import jaxadv
from jaxadv import cli
from jaxadv.cli import sequence as sequence_cli
from jaxadv.cli import sweep_args
from jaxadv.cli.report import jsonable
from jaxadv.engine.train import HPARAM_SPECS, HParams
from jaxadv.tuning import pbt
from jaxadv.validate import HParamSpec, hparam

INF = math.inf
# field: (low, high, low included, high included), from the fields' documented meaning
DOCUMENTED = {
    "lr": (0.0, INF, False, False),
    "gamma": (0.0, 1.0, True, True),
    "gae_lambda": (0.0, 1.0, True, True),
    "clip_eps": (0.0, INF, False, False),
    "ent_coef": (0.0, INF, True, False),
    "vf_coef": (0.0, INF, True, False),
    "max_grad_norm": (0.0, INF, False, False),
    "kl_coef": (0.0, INF, True, False),
    "clip_eps_high": (0.0, INF, False, False),
    "critic_lambda": (0.0, 1.0, True, True),
    "length_alpha": (0.0, INF, True, False),
    "icepop_alpha": (1.0, INF, False, False),
    "sapo_tau_pos": (0.0, INF, False, False),
    "sapo_tau_neg": (0.0, INF, False, False),
}
OLD_NAMES = ("lambda_policy", "lambda_critic", "clip_low", "clip_high")  # sequence's second names


def _refused(field, value):
    with pytest.raises(ValueError, match=f"`{field}` = .* is not allowed; it must be"):
        HParams(**{field: value}).validate()


def test_every_field_has_a_spec_and_the_documented_range():
    assert list(HPARAM_SPECS) == [f.name for f in dataclasses.fields(HParams)]
    assert set(DOCUMENTED) == set(HPARAM_SPECS)
    for field, (low, high, low_in, high_in) in DOCUMENTED.items():
        spec = HPARAM_SPECS[field]
        assert isinstance(spec, HParamSpec) and spec.doc.strip(), field
        assert spec.bounds == (low, high), field
        assert (spec.low_open, spec.high_open and high < INF) == (not low_in, not high_in and high < INF)
        default = getattr(HParams(), field)
        assert low < default or (low_in and default == low), field
        assert default < high or (high_in and default == high), field


@pytest.mark.parametrize("field", list(DOCUMENTED))
def test_validation_refuses_just_outside_and_accepts_the_closed_bounds(field):
    low, high, low_in, high_in = DOCUMENTED[field]
    below = low if not low_in else np.nextafter(low, -INF)
    _refused(field, below)
    _refused(field, float(below) - 1.0)
    _refused(field, math.nan)
    _refused(field, INF)
    if low_in:
        HParams(**{field: low}).validate()
    HParams(**{field: np.nextafter(low, INF)}).validate()
    if high < INF:
        _refused(field, np.nextafter(high, INF))
        if high_in:
            HParams(**{field: high}).validate()
        else:
            _refused(field, high)
        HParams(**{field: np.nextafter(high, -INF)}).validate()
    # a leading sweep axis: one bad entry refuses the whole array
    good = getattr(HParams(), field)
    _refused(field, np.array([good, below, good]))
    HParams(**{field: np.array([good, good])}).validate()


def test_messages_name_the_range_in_words():
    for field, value, words in [("gamma", 1.5, "in [0, 1]"), ("gae_lambda", -0.1, "in [0, 1]"),
                                ("critic_lambda", 2.0, "in [0, 1]"), ("lr", 0.0, "> 0"),
                                ("ent_coef", -1.0, ">= 0"), ("icepop_alpha", 1.0, "> 1")]:
        with pytest.raises(ValueError) as err:
            HParams(**{field: value}).validate()
        assert str(err.value) == f"`{field}` = {value!r} is not allowed; it must be {words}"
    with pytest.raises(ValueError, match="must be a finite number in \\[0, 1\\]"):
        HParams(gamma=math.nan).validate()


def test_hparam_spec_ranges_in_words_and_bad_declarations():
    assert HParamSpec("x", low=0.0, high=1.0, low_open=True).allowed == "in (0, 1]"
    assert HParamSpec("x", high=1.0, high_open=True).allowed == "< 1"
    assert HParamSpec("x").allowed == "any" and HParamSpec("x").bounds == (-INF, INF)
    assert not HParamSpec("x", low=0.0, high=1.0, high_open=True).contains(1.0)
    with pytest.raises(TypeError):
        hparam(1.0, "x", gt=0, ge=0)


def test_help_shows_each_fields_doc_once(capsys):
    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for field, spec in HPARAM_SPECS.items():
        assert "--" + field.replace("_", "-") in text, field
        assert " ".join(spec.doc.split()) in text, field


def test_every_hparams_field_has_a_grid_flag_with_its_range(capsys):
    names = [f.name for f in dataclasses.fields(sweep_args.Grid)]
    assert names[:len(HPARAM_SPECS)] == list(HPARAM_SPECS)  # crossed in HParams' order
    assert names[len(HPARAM_SPECS):] == ["num_envs", "num_steps", "estimator"]
    assert typing.get_args(sweep_args._HParamName) == tuple(HPARAM_SPECS)
    assert cli.main(["sweep", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for field in HPARAM_SPECS:
        assert f"--grid.{field.replace('_', '-')} FLOAT [FLOAT ...]" in text, field
    for field, words in [("gamma", "in [0, 1]"), ("icepop_alpha", "> 1"), ("kl_coef", ">= 0")]:
        assert f"HParams.{field} values ({words})" in text, field


@pytest.mark.parametrize("field", list(DOCUMENTED))
def test_each_grid_flag_parses_and_refuses_a_value_outside_its_range(field, no_compile, tmp_path,
                                                                     capsys):
    low, _, low_in, _ = DOCUMENTED[field]
    flag = "--grid." + field.replace("_", "-")
    args = tyro.cli(sweep_args.SweepArgs, args=[flag, "0.5", "0.75"])
    assert getattr(args.grid, field) == (0.5, 0.75)
    bad = str(low - 0.25 if low_in else low)
    good = str(getattr(HParams(), field))
    assert cli.main(["sweep", flag, good, bad, "--out", str(tmp_path / "out")]) == 2
    assert f"`{field}` = {float(bad)!r} is not allowed" in capsys.readouterr().err


def test_pbt_explores_within_each_fields_range():
    assert {f: (low, high) for f, (low, high, *_) in DOCUMENTED.items()} == pbt.VALID
    settings = pbt.PBTSettings(ranges={"icepop_alpha": (1.1, 4.0), "gamma": (0.9, 1.0)},
                               resample=0.0)
    for field, value, low, high in [("icepop_alpha", 1.05, 1.0, INF), ("gamma", 0.99, 0.0, 1.0)]:
        keys = jax.random.split(jax.random.key(0), 64)
        out = np.asarray([pbt._explore(k, jnp.float32(value), field, settings) for k in keys])
        assert np.all((out >= low) & (out <= high)), field
        want = sorted(min(max(value * f, low), high) for f in (0.8, 1.25))  # × 0.8 or × 1.25, clipped
        np.testing.assert_allclose(sorted(set(out.tolist())), want, rtol=1e-6, err_msg=field)


def test_sequence_aliases_name_real_fields_and_parse_the_same():
    specs, fields = set(HPARAM_SPECS), {f.name for f in dataclasses.fields(sequence_cli.SequenceArgs)}
    assert set(sequence_cli.FLAG_ALIASES) <= specs & fields
    assert set(sequence_cli.FLAG_ALIASES.values()) == set(OLD_NAMES)
    assert not set(sequence_cli.FLAG_ALIASES.values()) & (specs | fields)
    for field, alias in sequence_cli.FLAG_ALIASES.items():
        by_alias = tyro.cli(sequence_cli.SequenceArgs, args=["--" + alias.replace("_", "-"), "0.3"])
        by_name = tyro.cli(sequence_cli.SequenceArgs, args=["--" + field.replace("_", "-"), "0.3"])
        assert by_alias == by_name and getattr(by_name.hparams, field) == 0.3, field
    # the objective presets and the defaults set fields by their names (an unknown key would
    # be ignored); OBJECTIVES is the presets' older name
    presets = vars(sequence_cli).get("OBJECTIVE_PRESETS") or vars(sequence_cli)["OBJECTIVES"]
    for preset in [*presets.values(), sequence_cli._DEFAULTS]:
        assert set(preset) <= fields and not set(preset) & set(OLD_NAMES), preset


def test_sequence_hparams_are_its_fields_by_name():
    args = sequence_cli.SequenceArgs(objective="vapo", lr=3e-3, gamma=0.9, gae_lambda=0.7,
                                     clip_eps_high=0.5, icepop_alpha=1.5)
    hp = args.hparams
    assert (hp.lr, hp.gamma, hp.gae_lambda, hp.clip_eps, hp.clip_eps_high) == (3e-3, 0.9, 0.7, 0.2, 0.5)
    assert (hp.critic_lambda, hp.length_alpha, hp.icepop_alpha) == (1.0, 2.0, 1.5)  # vapo preset
    assert (hp.vf_coef, hp.max_grad_norm) == (HParams().vf_coef, HParams().max_grad_norm)  # no flag
    with pytest.raises(ValueError, match="`gae_lambda` = 1.5 is not allowed; it must be in"):
        _ = sequence_cli.SequenceArgs(gae_lambda=1.5).hparams


def test_a_sequence_record_with_the_older_names_still_resumes(tmp_path):
    args = sequence_cli.SequenceArgs(gae_lambda=0.8, clip_eps=0.3, clip_eps_high=0.4,
                                     critic_lambda=0.9, out=tmp_path)
    record = {k: v for k, v in jsonable(args).items() if k not in ("resume", "overwrite")}
    old = {sequence_cli.FLAG_ALIASES.get(k, k): v for k, v in record.items()}
    assert set(OLD_NAMES) <= set(old)
    (tmp_path / "sequence.json").write_text(json.dumps(old))
    stored = sequence_cli.stored_sequence_args(tmp_path)
    assert (stored.gae_lambda, stored.clip_eps, stored.clip_eps_high, stored.critic_lambda) == (
        0.8, 0.3, 0.4, 0.9)


def _record_fields(module):
    """``(class name, field names)`` of each dataclass and NamedTuple defined in ``module``."""
    for name, obj in vars(module).items():
        if not inspect.isclass(obj) or obj.__module__ != module.__name__:
            continue
        if dataclasses.is_dataclass(obj):
            yield name, [f.name for f in dataclasses.fields(obj)]
        elif hasattr(obj, "_fields"):
            yield name, list(obj._fields)


def test_one_name_per_concept():
    """No settings record of the layers that speak HParams (engine, tuning, science, cli) calls
    an HParams concept by another name: the sequence command's friendlier names exist only as
    FLAG_ALIASES. The pure functions at the top level keep their own keyword names (the papers'
    ``clip_low``/``clip_high`` of jaxadv.losses, ``lambda_`` of jaxadv.advantages) and the
    records that mirror them (jaxadv.testing); the engine maps HParams onto them."""
    seen = 0
    for info in pkgutil.walk_packages(jaxadv.__path__, "jaxadv."):
        if info.name.split(".")[1] not in ("engine", "tuning", "science", "cli"):
            continue
        module = importlib.import_module(info.name)
        for cls, names in _record_fields(module):
            seen += 1
            assert not set(names) & set(OLD_NAMES), f"{info.name}.{cls}"
    assert seen > 20
