"""Faults a user meets around the output directory, each tried for real: two writers, kill -9,
Ctrl-C and SIGTERM at each phase, a read-only directory, a full disk, OS and environment
errors, and bad flags. Each case checks the exit status, that stderr holds one ``error:``
line and no traceback, and that an earlier run's files are byte-identical afterwards."""

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import pytest
from _sweep_resume_worker import stub_make_train

from jaxadv import cli
from jaxadv.cli import app, outdir
from jaxadv.cli import train as train_cli
from jaxadv.engine import devices
from jaxadv.engine import sweep as sweep_engine

pytestmark = pytest.mark.fast_compile  # mechanics, not learning (conftest.py)

TINY = ["--algo", "a2c", "--num-envs", "2", "--num-steps", "8", "--hidden", "8", "--seeds", "2"]
RUN = [*TINY, "--total-timesteps", "256", "--chunk-updates", "4", "--checkpoint-every", "4",
       "--keep-checkpoints", "3", "--quiet"]
LONG = [*TINY, "--total-timesteps", "163840", "--chunk-updates", "8", "--checkpoint-every", "8",
        "--keep-checkpoints", "2", "--quiet", "--no-compile-cache"]  # compiles, then runs, for long
MEDIUM = [*TINY, "--total-timesteps", "2048", "--chunk-updates", "8", "--checkpoint-every", "8",
          "--keep-checkpoints", "2", "--quiet"]  # 128 updates
SWEEP = [*TINY, "--total-timesteps", "256"]


@pytest.fixture(scope="module")
def env():
    """The subprocesses' environment: the suite's compile cache (conftest.py), unoptimised
    compiles, and as many CPU devices as this process has (one, unless a test before gave it
    more): a program trained in a subprocess and in this process is the same program, compiled
    once."""
    return {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "PYTHONUNBUFFERED": "1",
            "JAX_NUM_CPU_DEVICES": str(jax.local_device_count())}


def main(capsys, *args) -> tuple[int, str]:
    """``jaxadv ARGS`` in this process (where the test is not about processes): the exit
    status and stderr."""
    capsys.readouterr()
    status = cli.main(list(map(str, args)))
    return status, capsys.readouterr().err


def jaxadv(*args, env, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxadv.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def jaxadv_in_turn(*commands, env) -> list[tuple[int, str]]:
    """The ``jaxadv`` ``commands`` one after the other in one new process (one start-up): each
    one's exit status and stderr; what the process prints after the last (background threads
    at its exit) goes with the last."""
    marker = "=== jaxadv exited with"
    code = ("import json, sys\nfrom jaxadv import cli\nfor argv in json.loads(sys.argv[1]):\n"
            f"    status = cli.main(argv)\n    print('{marker}', status, file=sys.stderr, "
            "flush=True)\nsys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code,
                           json.dumps([[str(a) for a in c] for c in commands])],
                          env=env, capture_output=True, text=True, timeout=300)
    *parts, rest = re.split(rf"^{marker} (\d+)\n", done.stderr, flags=re.MULTILINE)
    assert len(parts) == 2 * len(commands), done.stderr
    results = [(int(status), err) for err, status in zip(parts[::2], parts[1::2])]
    results[-1] = (results[-1][0], results[-1][1] + rest)
    assert done.returncode == results[-1][0], done.stderr
    return results


def start(*args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jaxadv.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(ready, proc: subprocess.Popen, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while not ready():
        assert proc.poll() is None, f"ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"not ready within {within} s"
        time.sleep(0.02)


def assert_one_error(err: str, *words: str) -> str:
    """``err`` holds exactly one ``error:`` line (containing ``words``) and no traceback."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], (word, err)
    return errors[0]


def snapshot(directory: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def without_wall_seconds(path: pathlib.Path) -> list[list[str]]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    column = rows[0].index("wall_seconds")
    return [row[:column] + row[column + 1:] for row in rows]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished RUN, trained in this process (its program is the one that the tests below
    train in this process again: compiled once)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(["train", *RUN, "--out", str(out)]) == 0
    return out


def copy(run: pathlib.Path, tmp_path: pathlib.Path, name: str = "run") -> pathlib.Path:
    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


@contextlib.contextmanager
def tmpfs(path: pathlib.Path, options: str):
    """A small filesystem of our own at ``path`` (as root), removed afterwards."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


ROOT = os.geteuid() == 0


# --- the lock ---


def test_a_second_writer_is_refused_while_the_first_runs_on(tmp_path, env, capsys):
    out = tmp_path / "run"
    first = start("train", *LONG, "--out", out, env=env)
    try:
        wait_for(lambda: (out / ".jaxadv.lock").exists(), first)
        # the second writer: this process (LONG but for --no-compile-cache, which would turn
        # the cache off for the tests after it here)
        cached = [a for a in LONG if a != "--no-compile-cache"]
        status, second = main(capsys, "train", *cached, "--lr", "1e-3", "--out", out)
        assert first.poll() is None  # still running
        first.send_signal(signal.SIGINT)  # the first stops after its call in flight, saved
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert status == 2
    assert_one_error(second, f"{out} is in use by process {first.pid} (started ")
    assert first.returncode == 130 and "Traceback" not in err  # stopped compiling, or saved
    if (out / "metrics.csv").exists():  # it had started training: one run's rows, whole
        rows = without_wall_seconds(out / "metrics.csv")
        assert len({len(row) for row in rows}) == 1 and rows[0][:2] == ["seed", "update"]
        assert f"resume with: jaxadv train --resume {out}" in err
    assert json.loads((out / "config.json").read_text())["hparams"]["lr"] != 1e-3
    assert not (out / ".jaxadv.lock").exists()  # released at exit


def test_kill_9_leaves_no_lock_that_blocks_the_resume(tmp_path, env, capsys):
    out = tmp_path / "run"
    proc = start("train", *MEDIUM, "--out", out, env=env)
    try:
        wait_for(lambda: (out / "checkpoints" / "8").is_dir(), proc)
    finally:
        proc.kill()  # SIGKILL: no handler runs, the lock file stays behind
        proc.communicate()
    assert (out / ".jaxadv.lock").exists() and proc.returncode == -signal.SIGKILL
    status, err = main(capsys, "train", "--resume", out)  # another process: this one
    assert status == 0, err
    assert "error" not in err and "Traceback" not in err
    rows = without_wall_seconds(out / "metrics.csv")
    assert len(rows) == 1 + 2 * 128 and [r[1] for r in rows[-2:]] == ["128", "128"]


# --- no silent overwrite ---


def test_a_fresh_run_never_replaces_a_finished_one(tmp_path, finished, capsys):
    run = copy(finished, tmp_path)
    (run / "eval").mkdir()
    (run / "eval" / "eval.json").write_text("{}")
    before = snapshot(run)
    for command in (["train", *RUN], ["sweep", *SWEEP, "--grid.lr", "1e-3", "--quiet"]):
        status, err = main(capsys, *command, "--out", run)
        assert status == 2
        assert_one_error(err, f"{run} holds a finished train run", "--overwrite")
        assert snapshot(run) == before
    status, err = main(capsys, "train", *RUN, "--out", run, "--overwrite")
    assert status == 0, err
    assert not (run / "eval").exists()  # the stale evaluation went with the run it judged
    assert without_wall_seconds(run / "metrics.csv") == without_wall_seconds(
        finished / "metrics.csv")


def test_resuming_a_finished_run_changes_no_output(tmp_path, finished, capsys):
    run = copy(finished, tmp_path)
    before = snapshot(run)
    status, err = main(capsys, "train", "--resume", run)
    assert status == 0 and "nothing to resume" in err
    after = snapshot(run)
    assert after.pop("config.json") and before.pop("config.json")  # it records the new path
    assert after == before  # summary.json, metrics.csv, returns.png and checkpoints


# --- signals at every phase ---


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_compiling_exits_at_once_and_leaves_nothing_in_the_way(
        tmp_path, env, signum):
    out = tmp_path / "run"
    proc = start("train", *LONG, "--out", out, env=env)
    try:
        wait_for(lambda: (out / "config.json").exists(), proc)  # written just before compiling
        t0 = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum
    assert time.monotonic() - t0 < 10  # not after the compile and a call
    assert "Traceback" not in err
    assert f"{signal.Signals(signum).name}: stopped before training began" in err
    assert outdir.find_run(out) is None  # nothing to lose: a fresh start goes ahead
    outdir.OutputLock(out).check()  # and no lock holds it
    assert not (out / outdir.LOCK_NAME).exists()  # nor is its file left behind


def test_a_signal_after_the_last_update_still_writes_every_output(tmp_path, monkeypatch,
                                                                 capsys):
    app._commands()  # every command imported before the patch (cli.sequence binds the name)
    write = train_cli.write_run_outputs

    def signalled(*args, **kwargs):  # SIGINT lands as the outputs are being written
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)
        return write(*args, **kwargs)

    monkeypatch.setattr(train_cli, "write_run_outputs", signalled)
    out = tmp_path / "run"
    assert cli.main(["train", *RUN, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "SIGINT: arrived after the last update; every output was written" in err
    assert (out / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["seeds"] == 2
    assert not list(out.glob(".*.tmp*"))  # no temporary file left behind


def test_a_one_call_sweep_stops_at_once(tmp_path, env):
    out = tmp_path / "sweep"
    proc = start("sweep", *TINY, "--total-timesteps", "163840", "--grid.lr", "1e-3", "3e-4",
                 "--no-compile-cache", "--out", out, env=env)
    try:
        wait_for(lambda: (out / "chunks" / "manifest.json").exists(), proc)
        time.sleep(1.0)  # into the compile of its one call
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    assert "SIGINT: stopped during the sweep's last chunk" in err
    assert f"resume with: jaxadv sweep --resume {out}" in err
    assert not (out / "summary.json").exists() and not (out / "sweep.png").exists()


# --- OS errors: one line, exit 2 ---


def test_a_read_only_directory_is_one_error_line_before_compiling(tmp_path, env, capsys,
                                                                   no_compile):
    if ROOT:  # root writes through permissions: a read-only filesystem instead
        context = tmpfs(tmp_path / "ro", "ro,size=64k")
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        context = contextlib.nullcontext(tmp_path / "ro")
    with context as ro:
        done = jaxadv("train", *RUN, "--out", ro / "run", env=env)  # a real process
        assert done.returncode == 2 and "compiling" not in done.stderr
        assert_one_error(done.stderr, str(ro / "run"))
        for command in (["sequence", "--total-samples", "512", "--quiet"],  # the other commands
                        ["sweep", *SWEEP, "--grid.lr", "1e-3"], ["variance", "--quiet"]):
            assert cli.main([*command, "--out", str(ro / "run")]) == 2
            assert_one_error(capsys.readouterr().err, str(ro / "run"))


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs")
def test_a_full_disk_is_one_error_line_with_the_resume_command(tmp_path, env, capsys):
    run = tmp_path / "full" / "run"
    if ROOT:  # a filesystem of 1 MiB: the first checkpoints fit, a later one does not
        context = tmpfs(tmp_path / "full", "size=1m")
        limit = None
    else:  # a file-size limit makes the writes fail instead (EFBIG)
        (tmp_path / "full").mkdir()
        context = contextlib.nullcontext()
        limit = 16_000  # metrics.csv outgrows it (after about 80 of the 128 updates)
    with context:
        kwargs = {}
        if limit is not None:
            import resource

            def limited():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

            kwargs["preexec_fn"] = limited
            # its compile-cache entries would be cut short too: not in the suite's cache
            env = {**env, "JAXADV_CACHE_DIR": str(tmp_path / "xla-cache")}
        # MEDIUM's program (compiled by the kill -9 test), checkpoints kept until none fits
        done = jaxadv("train", *TINY, "--total-timesteps", "2048", "--chunk-updates", "8",
                      "--checkpoint-every", "8", "--keep-checkpoints", "100", "--quiet",
                      "--out", run, env=env, **kwargs)
        assert done.returncode == 2
        line = assert_one_error(done.stderr, f"resume with: jaxadv train --resume {run}")
        if ROOT:
            assert "no space left on device while writing" in line and "free space" in line
        kept = copy(run, tmp_path, "kept")
    status, err = main(capsys, "train", "--resume", kept, "--keep-checkpoints", "3")
    assert status == 0, err


def test_environment_errors_are_one_line(tmp_path, env, capsys, no_compile):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["train", *RUN, "--out", a_file], {}, f"{a_file} is a file"),
        (["sequence", "--out", a_file], {}, f"{a_file} is a file"),
        (["variance", "--out", a_file], {}, str(a_file)),
        (["train", "--resume", a_file], {}, f"{a_file} is not a directory"),
        (["train", *RUN, "--out", tmp_path / "r"], {"JAXADV_CACHE_DIR": str(a_file)},
         "JAXADV_CACHE_DIR"),
        (["train", *RUN, "--seed", "99999999999999999999", "--out", tmp_path / "r"], {},
         "`seed`"),
        (["train", *RUN, "--out", tmp_path / "r"], {"JAX_PLATFORMS": "cuda"},
         "JAX cannot start the platform 'cuda'"),
    ]
    for argv, extra, words in cases:
        if "JAX_PLATFORMS" in extra:  # a backend is chosen once per process: a new one
            done = jaxadv(*argv, env={**env, **extra})
            status, err = done.returncode, done.stderr
        else:
            with pytest.MonkeyPatch.context() as patch:
                for name, value in extra.items():
                    patch.setenv(name, value)
                status = cli.main(list(map(str, argv)))
            err = capsys.readouterr().err
        assert status == 2, (argv, err)
        assert_one_error(err, words)
    assert not (tmp_path / "r").exists()


def test_eval_into_a_file_fails_before_playing(tmp_path, finished, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    played = []
    monkeypatch.setattr("jaxadv.cli.eval._play", lambda *a: played.append(1))
    assert cli.main(["eval", str(finished), "--out", str(a_file)]) == 2
    assert_one_error(capsys.readouterr().err, f"{a_file} is a file")
    assert played == []


def test_a_program_larger_than_memory_is_refused_before_the_first_step(tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setattr(devices, "available_memory", lambda device: 1024)  # 1 KiB
    out = tmp_path / "run"
    assert cli.main(["train", *RUN, "--out", str(out)]) == 2
    line = assert_one_error(capsys.readouterr().err, "the compiled program needs about",
                            "0.0 GiB available", "lower --num-envs")
    assert "XLA's estimate" in line
    assert not (out / "metrics.csv").exists()  # no step was run


# --- checkpoints, eval, sequence resume ---


def test_an_edited_checkpoint_meta_is_detected(tmp_path, finished, capsys):
    run = copy(finished, tmp_path)
    meta = run / "checkpoints" / "16" / "meta" / "metadata"
    data = json.loads(meta.read_text())
    data["train_seconds"] += 100.0
    meta.write_text(json.dumps(data))
    from jaxadv.engine.evaluate import load_run

    warnings = []
    loaded = load_run(run, warn=warnings.append)
    assert loaded.update == 12  # the edited one is not used
    assert any("SHA-256 does not match" in w for w in warnings)


def test_eval_quiet_still_warns_of_a_damaged_checkpoint(tmp_path, finished, capsys):
    run = copy(finished, tmp_path)
    for f in (run / "checkpoints" / "16" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 100:
            f.write_bytes(b"garbled" * 20)
    assert cli.main(["eval", str(run), "--episodes", "2", "--quiet", "--out",
                     str(tmp_path / "e")]) == 0
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "checkpoints/16 is unusable" in err
    assert json.loads((tmp_path / "e" / "eval.json").read_text())["checkpoint"]["update"] == 12


def test_sequence_runs_resume_as_sequence_runs(tmp_path, capsys):
    out = tmp_path / "seq"
    # 2 updates in calls of 1 (the default): the program of test_eval.py's sequence run
    argv = ["sequence", "--num-digits", "3", "--prompt-length", "2", "--group-size", "2",
            "--prompts-per-update", "4", "--total-samples", "16", "--layers", "1",
            "--width", "16", "--heads", "2", "--checkpoint-every", "1", "--out", str(out)]
    # no samples shown here (resume may change it): their programs are compiled once, below
    assert cli.main([*argv, "--samples-shown", "0"]) == 0
    capsys.readouterr()
    whole = without_wall_seconds(out / "metrics.csv")
    assert len(whole) == 1 + 2
    shutil.rmtree(out / "checkpoints" / "2")  # as if stopped after update 1 of 2
    for name in ("summary.json", "reward.png", "returns.png"):
        (out / name).unlink()
    refused = cli.main(argv)  # a fresh start is pointed at the sequence resume
    assert refused == 2
    assert f"jaxadv sequence --resume {out}" in capsys.readouterr().err
    assert cli.main(["sequence", "--resume", str(out), "--samples-shown", "1"]) == 0
    printed = capsys.readouterr()
    assert "after RL" in printed.out and "resuming" in printed.err
    assert (out / "reward.png").exists() and (out / "summary.json").exists()
    assert without_wall_seconds(out / "metrics.csv") == whole
    assert cli.main(["sequence", "--resume", str(out), "--width", "32"]) == 2
    assert "`width` = 32 would change the run" in capsys.readouterr().err


# --- messages ---


def test_bad_flags_are_one_error_line_with_sorted_choices(capsys, no_compile):
    for argv, words in [
        (["sequence", "--objective", "x"],
         "expected one of: cispo, dapo, gmpo, grpo, gspo, icepop, sapo, vapo"),
        (["train", "--algo", "bogus"],
         "expected one of: a2c, cispo, dapo, gmpo, gspo, icepop, ppo, reinforce, sapo"),
        (["train", "--num-envs", "four"], "usage: --num-envs INT"),
        (["train", "--lr", "inf"], "must be a finite number > 0"),
        (["sweep", "--grid.estimator", "None"], "'None' is not a value to sweep"),
        (["trian"], "available subcommands: train"),
    ]:
        assert cli.main(argv) == 2
        line = assert_one_error(capsys.readouterr().err, words)
        if "expected one of" in line:
            assert "None" not in line


def test_misleading_messages_name_the_real_problem(tmp_path, finished, capsys, no_compile):
    assert cli.main(["train", "--resume", str(finished), "--seeds", "3"]) == 2
    assert_one_error(capsys.readouterr().err, "`seeds` = 3 would change the run")
    assert cli.main(["eval", str(finished), "--point", "0"]) == 2
    line = assert_one_error(capsys.readouterr().err, "holds a train run")
    assert "--resume" not in line
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert cli.main(["sweep", "--grid.lr", "1e-3", "--out", str(a_file)]) == 2
    line = assert_one_error(capsys.readouterr().err, f"{a_file} is a file")
    assert "chunks" not in line


def test_duplicate_grid_values_are_warned_of(tmp_path, capsys, monkeypatch):
    # the stub trainer of test_sweep_resume.py: the sweep runs end to end, nothing compiles
    monkeypatch.setattr(sweep_engine, "make_train", stub_make_train())
    assert cli.main(["sweep", *TINY, "--total-timesteps", "64", "--grid.lr", "1e-3", "1e-3",
                     "--quiet", "--out", str(tmp_path / "s")]) == 0
    assert "warning: --grid.lr lists 0.001 more than once" in capsys.readouterr().err


def test_brax_environments_print_nothing_on_import():
    """And gymnax comes without seaborn (jaxadv/envs/_gymnax.py), which its Pong renderer still
    finds when it draws."""
    code = ("import sys; from jaxadv.envs import make; make('brax:inverted_pendulum'); "
            "print('seaborn' in sys.modules); "
            "from gymnax.environments.misc import pong; print(len(pong.sns.color_palette()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Failed to import" not in done.stdout + done.stderr
    assert done.stdout.split() == ["False", "10"]


def test_no_usable_checkpoint_is_one_line_without_background_tracebacks(tmp_path, env,
                                                                         finished):
    run = copy(finished, tmp_path)
    (run / "summary.json").unlink()
    for f in (run / "checkpoints").rglob("*"):
        if f.is_file() and f.stat().st_size > 100:
            f.write_bytes(b"garbled")
    commands = (["train", "--resume", run], ["eval", run, "--out", tmp_path / "e"])
    for status, err in jaxadv_in_turn(*([*c, "--quiet"] for c in commands), env=env):
        assert status == 2
        assert_one_error(err, "no usable checkpoint")
