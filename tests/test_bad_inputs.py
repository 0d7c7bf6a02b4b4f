"""Bad input to every command is refused in well under a second, before anything compiles,
with `error:` naming the field — one table across `train`, `sweep`, `variance` and `sequence`."""

import time

import pytest

from jaxadv import cli

CASES = [
    # train
    (["train", "--chunk-updates", "0"], "chunk_updates"),
    (["train", "--keep-checkpoints", "0"], "keep_checkpoints"),
    (["train", "--checkpoint-every", "0"], "checkpoint_every"),
    (["train", "--network", "transformer"], "network"),
    (["train", "--estimator", "grpo"], "episodic"),
    (["train", "--episodic", "--group-size", "3"], "group_size"),
    (["train", "--resume", "/nonexistent"], "resume"),
    (["train", "--kl-coef", "-1"], "kl_coef"),
    (["train", "--warm-start-steps", "5"], "warm_start_steps"),
    (["train", "--heads", "3"], "heads"),
    (["train", "--seq-len", "8"], "seq_len"),
    (["train", "--network", "gru", "--seq-len", "100"], "seq_len"),
    (["train", "--network", "gru", "--seq-len", "64", "--burn-in", "65"], "burn_in"),
    (["train", "--network", "gru", "--burn-in", "-1"], "burn_in"),
    (["train", "--network", "gru", "--shared-torso"], "shared_torso"),
    (["train", "--network", "gru", "--env", "Breakout-MinAtar"], "image observations"),
    (["train", "--network", "gru", "--num-minibatches", "3"], "num_minibatches"),
    # sweep
    (["sweep", "--grid.lr", "-1"], "lr"),
    (["sweep", "--grid.gamma", "2"], "gamma"),
    (["sweep", "--samples", "0", "--grid.lr", "1e-4", "1e-3"], "samples"),
    (["sweep", "--max-parallel", "0", "--grid.lr", "1e-3"], "max_parallel"),
    (["sweep", "--grid.lr"], "lr"),
    (["sweep", "--samples", "4", "--grid.lr", "1e-3"], "lr"),
    (["sweep", "--resume", "/nonexistent"], "resume"),
    # variance
    (["variance", "--estimators", "gae:2"], "gae:2"),
    (["variance", "--estimators", "vtrace"], "vtrace"),
    (["variance", "--estimators", "nstep:0"], "nstep:0"),
    (["variance", "--critic", "noisy:-1"], "noisy:-1"),
    (["variance", "--critic", "fitted:0"], "fitted:0"),
    (["variance", "--critic", "network"], "network"),
    (["variance", "--batch-sizes", "0"], "batch_sizes"),
    (["variance", "--num-batches", "2"], "num_batches"),
    (["variance", "--gamma", "1.5"], "gamma"),
    (["variance", "--termination", "1.0"], "termination"),
    (["variance", "--states", "0"], "states"),
    (["variance", "--mdp", "gridworld", "--states", "8"], "states"),
    (["variance", "--confidence", "1.0"], "confidence"),
    (["variance", "--horizon", "0"], "horizon"),
    (["variance", "--env", "CartPol-v1"], "CartPol-v1"),
    (["variance", "--env", "CartPole-v1", "--critic", "exact"], "critic"),
    (["variance", "--checkpoint", "/nonexistent"], "checkpoint"),
    (["variance", "--env", "CartPole-v1", "--checkpoint", "/nonexistent"], "checkpoint"),
    (["variance", "--sequence", "reverse", "--estimators", "qv"], "qv"),  # no Q critic there
    (["variance", "--sequence", "reverse", "--batch-sizes", "6"], "group_size"),
    (["variance", "--sequence", "reverse", "--num-digits", "4", "--prompt-length", "6"], "responses"),
    # sequence
    (["sequence", "--group-size", "0"], "group_size"),
    (["sequence", "--estimator", "rloo", "--group-size", "1"], "group_size"),
    (["sequence", "--prompt-length", "0"], "prompt_length"),
    (["sequence", "--total-samples", "10"], "total_samples"),
    (["sequence", "--lr", "-1"], "lr"),
    (["sequence", "--task", "add", "--prompt-length", "3"], "prompt_length"),
    (["sequence", "--width", "30"], "heads"),
    (["sequence", "--num-minibatches", "3"], "num_minibatches"),
    (["sequence", "--warm-start-prompts", "0"], "warm_start_prompts"),
    (["sequence", "--temperature", "0"], "temperature"),
    (["train", "--env", "Pendulum-v1", "--temperature", "2"], "temperature"),
]


@pytest.mark.parametrize("argv, field", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_refused_before_compiling(argv, field, no_compile, capsys, tmp_path):
    start = time.perf_counter()
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - start < 2.0
    err = capsys.readouterr().err
    assert err.startswith("error:") and field in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
