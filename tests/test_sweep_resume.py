"""Sweeps resume by chunk: ``jaxadv sweep`` saves each finished chunk under
``--out/chunks``; ``--resume`` computes only the missing ones and writes the same files,
bit for bit, as a sweep that never stopped.

``train`` is a stub (``tests/_sweep_resume_worker.py``) that compiles in milliseconds and
gives every run and update its own numbers; that run_sweep's per-run results do not
depend on the chunking for the real trainer is test_sweep.py's ``chunked == fused``.
Every sweep here is 6 points × 2 seeds = 12 runs in 6 chunks of 2 (``--max-parallel 2``).
"""

import json
import pathlib
import shutil
import signal
import sys

import numpy as np
import pytest
from _processes import interrupt_when
from _sweep_resume_worker import stub_make_train

from jaxadv import cli
from jaxadv.cli import sweep as sweep_cli
from jaxadv.cli.interrupts import Interrupts
from jaxadv.engine import sweep as sweep_module
from jaxadv.engine.checkpoint import SweepChunks
from jaxadv.engine.sweep import ChunkId, ChunkResult, run_sweep
from jaxadv.engine.train import TrainConfig

pytestmark = pytest.mark.fast_compile  # compares programs and checks mechanics (conftest.py)

WORKER = [sys.executable, str(pathlib.Path(__file__).with_name("_sweep_resume_worker.py"))]
SWEEP = ["sweep", "--num-envs", "2", "--num-steps", "16", "--total-timesteps", "256",
         "--hidden", "8", "--grid.lr", "1e-3", "2e-3", "3e-3", "--grid.gae-lambda", "0.5", "1.0",
         "--seeds", "2", "--seed", "3", "--max-parallel", "2"]
ALL_CHUNKS = [ChunkId(0, s, s + 2) for s in range(0, 12, 2)]


def _chunk_files(out) -> list[str]:
    return sorted(p.name for p in (out / "chunks").glob("*.npz"))


def _manifest(out) -> dict:
    return json.loads((out / "chunks" / "manifest.json").read_text())


def _results(summary_path) -> dict:
    """summary.json without the timings and the output directory."""
    summary = json.loads(summary_path.read_text())
    return {k: summary[k] for k in ("best", "per_point", "points", "seeds", "runs", "swept",
                                    "train_config", "hparams")}


def _assert_same_outputs(out, want) -> None:
    assert (out / "sweep.csv").read_bytes() == (want / "sweep.csv").read_bytes()
    assert _results(out / "summary.json") == _results(want / "summary.json")
    assert (out / "sweep.png").stat().st_size > 0
    assert _manifest(out)["complete"] is True


class _Signalled(Interrupts):
    """Stands in for ``sweep_cli.Interrupts`` (its messages, no handlers): a SIGTERM arrived
    before the first chunk, so the sweep stops after the first chunk it computes."""

    signum = signal.SIGTERM

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(sweep_module, "make_train", stub_make_train())


@pytest.fixture
def spy(monkeypatch):
    """The ids of the chunks each ``run_sweep`` call computed (its ``on_result`` calls)."""
    calls: list[list[ChunkId]] = []

    def spying_run_sweep(*args, on_result=None, **kwargs):
        computed = []
        calls.append(computed)

        def record(chunk_id, result):
            computed.append(chunk_id)
            on_result(chunk_id, result)

        return run_sweep(*args, on_result=record, **kwargs)

    monkeypatch.setattr(sweep_cli, "run_sweep", spying_run_sweep)
    return calls


def _stub_sweep(out, exit_code: int, interrupts=None):
    """Run SWEEP into ``out`` on the stub trainer (and ``interrupts`` as ``sweep_cli.Interrupts``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_module, "make_train", stub_make_train())
        if interrupts is not None:
            mp.setattr(sweep_cli, "Interrupts", interrupts)
        assert cli.main([*SWEEP, "--quiet", "--out", str(out)]) == exit_code
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted sweep (the reference)."""
    return _stub_sweep(tmp_path_factory.mktemp("finished") / "out", 0)


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory):
    """A sweep stopped by SIGTERM after its first chunk (``_Signalled``)."""
    return _stub_sweep(tmp_path_factory.mktemp("unfinished") / "out", 128 + signal.SIGTERM,
                       _Signalled)


def _copy(src, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(src, out)
    return out


# --- interrupt with a real signal, resume, compare ---


@pytest.mark.timeout(120)
def test_sigint_then_resume_equals_an_uninterrupted_sweep(finished, tmp_path, stub, capsys):
    out = tmp_path / "out"
    # 0.5 s per chunk, inside the compiled call: SIGINT lands while a chunk is in flight
    status, err = interrupt_when([*WORKER, "0.5", *SWEEP, "--out", str(out)],
                                 lambda: len(_chunk_files(out)) >= 2, within=60)
    assert status == 130, err
    saved = _chunk_files(out)
    assert 2 <= len(saved) < 6, err  # the chunk in flight was finished and saved
    manifest = _manifest(out)
    assert sorted(manifest["chunks"]) == saved and manifest["complete"] is False
    assert f"SIGINT: stopped after {2 * len(saved)} of 12 runs; saved {len(saved)} chunk(s)" in err
    assert f"resume with: jaxadv sweep --resume {out}" in err
    assert not (out / "sweep.csv").exists()

    capsys.readouterr()
    status = cli.main(["sweep", "--resume", str(out)])  # in this process, on the stub trainer
    err = capsys.readouterr().err
    assert status == 0, err
    k, log = len(saved), " ".join(err.split())  # rich wraps long lines
    assert f"resuming {out}: {k} chunk(s) saved, {2 * k} of 12 runs" in log
    assert f"computed {6 - k} chunk(s), {12 - 2 * k} of 12 runs" in log  # only the missing ones
    assert len(_chunk_files(out)) == 6
    _assert_same_outputs(out, finished)


# --- in process: SIGTERM, resume, what was computed ---


def test_sigterm_saves_one_chunk_and_resume_computes_the_other_five(
    unfinished, finished, tmp_path, stub, spy, capsys
):
    out = _copy(unfinished, tmp_path)
    assert _chunk_files(out) == ["group0-runs0-2.npz"]
    assert cli.main(["sweep", "--resume", str(out)]) == 0
    assert spy == [ALL_CHUNKS[1:]]  # the saved chunk was not computed again
    err = capsys.readouterr().err
    assert "resuming" in err and "computed 5 chunk(s), 10 of 12 runs" in err
    _assert_same_outputs(out, finished)
    # resuming a finished sweep computes nothing and writes the same files again
    assert cli.main(["sweep", "--resume", str(out), "--quiet"]) == 0
    assert spy[1] == []
    _assert_same_outputs(out, finished)


def test_resume_with_another_max_parallel_recomputes_what_does_not_line_up(
    unfinished, finished, tmp_path, stub, spy, capsys
):
    out = _copy(unfinished, tmp_path)
    assert cli.main(["sweep", "--resume", str(out), "--max-parallel", "3", "--quiet"]) == 0
    assert spy == [[ChunkId(0, s, s + 3) for s in range(0, 12, 3)]]  # [0, 2) is not a chunk
    assert "cut for --max-parallel 2 on 1 device(s), this sweep cuts for 3" in capsys.readouterr().err
    _assert_same_outputs(out, finished)
    assert _manifest(out)["settings"]["max_parallel"] == 3


@pytest.mark.parametrize("how", ["truncate", "garble", "delete"])
def test_damaged_chunk_is_recomputed_with_a_warning(how, finished, tmp_path, stub, spy, capsys):
    out = _copy(finished, tmp_path)
    damaged = out / "chunks" / "group0-runs4-6.npz"
    data = damaged.read_bytes()
    with np.load(damaged) as arrays:
        want = {k: arrays[k] for k in ("returns", "episodes", "env_steps")}
    if how == "truncate":
        damaged.write_bytes(data[: len(data) // 2])
    elif how == "garble":  # same length: only the digest can tell
        middle = len(data) // 2
        damaged.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16])
                            + data[middle + 16:])
    else:
        damaged.unlink()
    (out / "sweep.csv").unlink()
    assert cli.main(["sweep", "--resume", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"warning: chunk {damaged} is unusable" in err, err
    assert "computing its runs again" in err
    if how == "garble":
        assert "SHA-256" in err
    assert spy == [[ChunkId(0, 4, 6)]]
    _assert_same_outputs(out, finished)
    with np.load(damaged) as arrays:  # written again: the same arrays
        for name, values in want.items():
            np.testing.assert_array_equal(arrays[name], values)


# --- refused before anything compiles ---


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--grid.lr", "1e-3", "2e-3", "4e-3"], ["`grid.lr` = (0.001, 0.002, 0.004)",
                                                "grid.lr = (0.001, 0.002, 0.003)"]),
        (["--grid.gae-lambda", "0.5"], ["`grid.gae_lambda` = (0.5,)"]),
        (["--grid.ent-coef", "0", "0.1"], ["`grid.ent_coef` = (0.0, 0.1)", "None"]),
        (["--seeds", "3"], ["`seeds` = 3", "seeds = 2"]),
        (["--seed", "0"], ["`seed` = 0", "seed = 3"]),
        (["--num-envs", "4"], ["`num_envs` = 4", "num_envs = 2"]),
        (["--gamma", "0.9"], ["`gamma` = 0.9"]),
        (["--out", "elsewhere"], ["`out`", "own directory"]),
    ],
)
def test_resume_refuses_a_changed_setting_before_compiling(
    flags, words, unfinished, no_compile, capsys
):
    before = (unfinished / "chunks" / "manifest.json").read_bytes()
    assert cli.main(["sweep", "--resume", str(unfinished), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    assert (unfinished / "chunks" / "manifest.json").read_bytes() == before


def test_resume_of_a_directory_without_a_sweep(tmp_path, capsys):
    assert cli.main(["sweep", "--resume", str(tmp_path / "missing")]) == 2
    assert "chunks/manifest.json not found" in capsys.readouterr().err
    (tmp_path / "bad" / "chunks").mkdir(parents=True)
    (tmp_path / "bad" / "chunks" / "manifest.json").write_text("{")
    assert cli.main(["sweep", "--resume", str(tmp_path / "bad")]) == 2
    assert "manifest.json is unreadable" in capsys.readouterr().err


def test_fresh_sweep_over_an_unfinished_one_is_refused(unfinished, finished, tmp_path, stub,
                                                       capsys):
    before = _chunk_files(unfinished)
    assert cli.main([*SWEEP, "--out", str(unfinished)]) == 2
    err = capsys.readouterr().err
    assert f"`out`: {unfinished} holds an unfinished sweep (1 chunk(s) saved)" in err
    assert f"jaxadv sweep --resume {unfinished}" in err
    assert _chunk_files(unfinished) == before
    # over a finished one: refused, then with --overwrite starts over (its chunks replaced)
    out = _copy(finished, tmp_path)
    (out / "chunks" / "group0-runs0-2.npz").write_bytes(b"stale")
    assert cli.main([*SWEEP, "--out", str(out), "--quiet"]) == 2
    assert f"`out`: {out} holds a finished sweep; choose another --out, or replace it with " \
           "--overwrite" in capsys.readouterr().err
    assert (out / "chunks" / "group0-runs0-2.npz").read_bytes() == b"stale"
    assert cli.main([*SWEEP, "--out", str(out), "--quiet", "--overwrite"]) == 0
    _assert_same_outputs(out, finished)


# --- run_sweep's hook ---


def test_run_sweep_skips_saved_chunks_and_compiles_only_groups_with_work(monkeypatch):
    """Two static groups (num_envs 2, 4) of 6 runs, chunks of 4: [0, 4) and [4, 6) each."""
    built = []

    def counting_make_train(config):
        built.append(config.num_envs)
        return stub_make_train()(config)

    monkeypatch.setattr(sweep_module, "make_train", counting_make_train)
    config = TrainConfig(num_envs=2, num_steps=16, total_timesteps=256, hidden=(8,))
    grid = {"lr": [1e-3, 2e-3, 3e-3], "num_envs": [2, 4]}
    fresh_ids = {}
    fresh = run_sweep(config, grid, 2, max_parallel=4,
                      on_result=lambda i, r: fresh_ids.setdefault(i, r))
    assert list(fresh_ids) == [(0, 0, 4), (0, 4, 6), (1, 0, 4), (1, 4, 6)]
    assert all(r.returns.shape == (i.stop - i.start, 8 if i.group == 0 else 4)
               for i, r in fresh_ids.items())
    assert built == [2, 4]

    built.clear()
    saved = {i: r for i, r in fresh_ids.items() if i != (1, 4, 6)}
    saved[ChunkId(0, 0, 3)] = fresh_ids[ChunkId(0, 0, 4)]  # not a chunk of this sweep: ignored
    computed, progress = [], []
    again = run_sweep(config, grid, 2, max_parallel=4, saved=saved,
                      on_result=lambda i, r: computed.append(i),
                      on_chunk=lambda *a: progress.append(a))
    assert computed == [(1, 4, 6)] and built == [4]  # group 0 was not even compiled
    assert progress == [(4, 12), (6, 12), (10, 12), (12, 12)]
    for name in ("returns", "episodes", "env_steps"):
        for got, want in zip(getattr(again, name), getattr(fresh, name), strict=True):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(again.final_return, fresh.final_return)
    used = [r for i, r in saved.items() if i != (0, 0, 3)]  # timings: the saved chunks' own
    assert again.compile_seconds >= sum(r.compile_seconds for r in used) > 0
    assert again.wall_seconds >= sum(r.seconds for r in used)

    bad = dict(saved)
    bad[ChunkId(0, 0, 4)] = fresh_ids[ChunkId(0, 4, 6)]  # 2 rows where 4 are due
    with pytest.raises(ValueError, match=r"`saved`: chunk .* expected 4 each"):
        run_sweep(config, grid, 2, max_parallel=4, saved=bad)


def test_chunk_store_round_trip_and_a_reader_that_does_not_write(tmp_path):
    result = ChunkResult(np.array([[1.0, np.nan]], np.float32), np.array([[1.0, 0.0]], np.float32),
                         np.array([[8, 16]], np.int32), seconds=0.5, compile_seconds=0.25)
    store = SweepChunks(tmp_path / "chunks")
    store.start({"seeds": 1}, devices=1)
    store.save(ChunkId(0, 3, 4), result)
    loaded = SweepChunks(tmp_path / "chunks").load({"seeds": 1}, 1, warn=pytest.fail)
    got = loaded[ChunkId(0, 3, 4)]
    for a, b in zip(got[:3], result[:3], strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert (got.seconds, got.compile_seconds) == (0.5, 0.25)
    assert not list((tmp_path / "chunks").glob(".*"))  # no temporary file left behind

    other = SweepChunks(tmp_path / "other", write=False)  # process 1 of a multi-process sweep
    other.start({"seeds": 1}, devices=1)
    other.save(ChunkId(0, 3, 4), result)
    other.finish()
    assert not (tmp_path / "other").exists() and len(other.manifest["chunks"]) == 1
