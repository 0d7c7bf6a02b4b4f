"""The network table (jaxadv.engine.architectures.NETWORKS): a row added at run time is a
``--network`` choice with its summary in ``jaxadv train --help``, and each row's declared
features are what the configuration's checks allow and refuse."""

import pytest

from jaxadv import cli
from jaxadv.engine.architectures import FEATURES, NETWORK_NAMES, NETWORKS
from jaxadv.engine.train import TrainConfig

SMALL = {"num_envs": 4, "num_steps": 32, "total_timesteps": 4 * 32}

# One setting that uses each optional feature on CartPole-v1 (or its own env), and how the
# refusal names it.
USES = {
    "image_obs": ({"env": "Breakout-MinAtar"}, "image observations"),
    "continuous": ({"env": "Pendulum-v1"}, "continuous actions"),
    "q_critic": ({"estimator": "qv"}, "a Q critic"),
    "normalize_obs": ({"normalize_obs": True}, "normalize_obs"),
    "episodic": ({"episodic": True}, "episodic"),
    "shared_torso": ({"shared_torso": True}, "shared_torso"),
    "kl": ({"kl": "loss"}, "kl"),
    "temperature": ({"temperature": 2.0}, "temperature"),
    "behaviour_temperature": ({"behaviour_temperature": 2.0, "normalize_advantages": False},
                              "behaviour_temperature"),
    "behaviour_precision": ({"behaviour_precision": "bfloat16", "normalize_advantages": False},
                            "behaviour_precision"),
    "micro_batch_size": ({"micro_batch_size": 16}, "micro_batch_size"),
    "warm_start_steps": ({"warm_start_steps": 5}, "warm_start_steps"),
    "seq_len": ({"seq_len": 8}, "seq_len"),
    "burn_in": ({"seq_len": 8, "burn_in": 4}, "burn_in"),
}


def _dummy(**fields):
    """A row that builds mlp's network and supports what ``fields`` say."""
    return NETWORKS["mlp"]._replace(summary="a dummy row of the test", default_for=None, **fields)


def _help(capsys) -> str:
    assert cli.main(["train", "--help"]) == 0
    return capsys.readouterr().out


def test_the_names_are_the_tables_and_the_table_has_the_four_networks():
    assert tuple(NETWORKS) == NETWORK_NAMES
    assert {"mlp", "cnn", "gru", "transformer"} <= set(NETWORKS)


def test_a_row_registered_at_run_time_is_a_choice_of_train_help(monkeypatch, capsys):
    assert "dummy" not in _help(capsys)
    monkeypatch.setitem(NETWORKS, "dummy", _dummy())
    text = " ".join(_help(capsys).split())
    assert f"--network {{None,{','.join(NETWORKS)}}}" in text  # the live table, dummy last
    assert list(NETWORKS)[-1] == "dummy"
    assert "dummy (a dummy row of the test)" in text
    assert "default: mlp for flat observations, cnn for image observations." in text


def test_a_row_without_continuous_actions_is_refused_for_pendulum(monkeypatch):
    monkeypatch.setitem(NETWORKS, "dummy", _dummy(supports=NETWORKS["mlp"].supports - {"continuous"}))
    TrainConfig(env="CartPole-v1", network="dummy", **SMALL)  # discrete: allowed
    with pytest.raises(ValueError) as err:
        TrainConfig(env="Pendulum-v1", network="dummy", **SMALL)
    message = str(err.value)
    assert message.startswith("`network` = 'dummy' does not support continuous actions")
    # mlp and gru take continuous actions; cnn needs images, transformer a token env
    allowed = message.partition("`network` may be one of: ")[2].split(", ")
    assert allowed[:2] == ["'mlp'", "'gru'"]  # then only rows added to the package after them
    assert not {"'cnn'", "'transformer'", "'dummy'"} & set(allowed)


def test_the_cli_refuses_the_run_time_row_naming_the_field(monkeypatch, no_compile, capsys, tmp_path):
    monkeypatch.setitem(NETWORKS, "dummy", _dummy(supports=frozenset()))
    argv = ["train", "--env", "Pendulum-v1", "--network", "dummy", "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "`network` = 'dummy'" in err and "'mlp', 'gru'" in err


@pytest.mark.parametrize("feature", list(USES))
def test_a_row_refuses_exactly_the_features_it_does_not_declare(monkeypatch, feature):
    changes, label = USES[feature]
    settings = {**SMALL, **changes}
    everything = frozenset(FEATURES)
    monkeypatch.setitem(NETWORKS, "dummy", _dummy(supports=everything - {feature}))
    with pytest.raises(ValueError) as err:
        TrainConfig(network="dummy", **settings)
    assert str(err.value).startswith(f"`network` = 'dummy' does not support {label} (")
    assert "`network` may be one of: " in str(err.value)
    monkeypatch.setitem(NETWORKS, "dummy", _dummy(supports=everything))
    assert TrainConfig(network="dummy", **settings).network == "dummy"


def test_a_row_that_needs_images_refuses_flat_observations(monkeypatch):
    monkeypatch.setitem(NETWORKS, "dummy", _dummy(needs=frozenset({"image_obs"})))
    assert TrainConfig(env="Breakout-MinAtar", network="dummy", **SMALL).network == "dummy"
    with pytest.raises(ValueError, match="`network` = 'dummy' needs image observations; `env` = "
                                         "'CartPole-v1' observes shape"):
        TrainConfig(env="CartPole-v1", network="dummy", **SMALL)


# What each network of the package refuses, written out (docs/networks.md): every other
# feature of USES is allowed with it.
REFUSED = {
    "mlp": {"warm_start_steps", "seq_len", "burn_in"},
    "cnn": {"warm_start_steps", "seq_len", "burn_in"},
    "gru": {"image_obs", "episodic", "shared_torso", "kl", "temperature", "behaviour_temperature",
            "behaviour_precision", "micro_batch_size", "warm_start_steps"},
}


@pytest.mark.parametrize(("network", "feature"), [  # no continuous env has image observations
    (network, feature) for network in REFUSED for feature in USES
    if (network, feature) != ("cnn", "continuous")])
def test_the_package_rows_allow_and_refuse_as_documented(network, feature):
    settings = {**SMALL, **USES[feature][0]}
    if network == "cnn":  # it needs images: every case on MinAtar
        settings["env"] = "Breakout-MinAtar"
    if feature in REFUSED[network]:
        with pytest.raises(ValueError, match=f"`network` = '{network}' does not support"):
            TrainConfig(network=network, **settings)
    else:
        assert TrainConfig(network=network, **settings).network == network


def test_defaults_and_the_transformers_needs():
    assert TrainConfig(env="Breakout-MinAtar", **SMALL).network == "cnn"
    assert TrainConfig(**SMALL).network == "mlp"
    with pytest.raises(ValueError, match="`network` = 'transformer' needs a token environment"):
        TrainConfig(network="transformer", **SMALL)
    with pytest.raises(ValueError, match="`network` = 'cnn' needs image observations"):
        TrainConfig(network="cnn", **SMALL)
    with pytest.raises(ValueError, match="does not support a Q critic"):
        TrainConfig(env="Sequence-v0", network="transformer", estimator="qv", **SMALL)
