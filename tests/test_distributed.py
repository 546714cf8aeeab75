"""Beyond one process: the Ray executor on a local 2-CPU cluster bound to 127.0.0.1 (same leaderboard as
the local executor, a killed worker's cell retried, failures and Ctrl-C handled), and Optuna tuning
workers sharing one study on a real throw-away PostgreSQL server on loopback, one of them SIGKILLed."""
from __future__ import annotations

import datetime
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest

from bench import config, results, runner
from bench.errors import BenchError
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow

QUICK = config.CONFIG_DIR / "quick.yaml"
CLI = [sys.executable, "-m", "bench.cli"]
ARCHS = ["unet", "linknet"]
TIMING = results.MEASURED  # measured, so they differ between any two runs

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'salt-bench[ray]')")


def _tiny(data_dir: Path, **extra: object) -> config.Config:
    return config.load([QUICK], tiny_overrides(data_dir, **extra))


def _ancestors(pid: int) -> set[int]:
    """Parent chain of a process, from /proc, to tell our own Ray workers from anyone else's."""
    chain = set()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.add(pid)
    return chain


def _our_cell_workers() -> list[int]:
    """Ray worker processes of this test process that are training a cell right now."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::salt-bench-cell") and os.getpid() in _ancestors(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.ray
@needs_ray
def test_ray_grid_matches_local_even_when_a_worker_is_killed(tiny_dataset: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _tiny(tiny_dataset, **{"protocol.epochs": 3})
    local = runner.run_grid(cfg, tmp_path / "local", archs=ARCHS, progress=False)

    killed: list[int] = []
    stop = threading.Event()

    def kill_one_worker_mid_cell() -> None:
        while not stop.is_set() and not killed:
            if any((tmp_path / "ray" / "cells").glob("*/*/checkpoint.pt")):  # a cell has finished an epoch
                for pid in _our_cell_workers()[:1]:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker_mid_cell, daemon=True)
    killer.start()
    try:
        via_ray = runner.run_grid(cfg, tmp_path / "ray", archs=ARCHS, progress=False, executor="ray",
                             executor_options={"num_cpus": 2})
    finally:
        stop.set()
        killer.join()
    out = capsys.readouterr().out
    assert "ray: started a local cluster (2 CPU, 0 GPU, node 127.0.0.1)" in out
    assert killed, "no Ray worker was caught mid-cell, so the retry was not exercised"

    assert len(local) == len(ARCHS)
    a = pd.read_csv(tmp_path / "local" / "leaderboard.csv").drop(columns=TIMING)
    b = pd.read_csv(tmp_path / "ray" / "leaderboard.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(a, b)
    for oof in sorted((tmp_path / "local" / "cells").glob("*/*/oof.npz")):
        with np.load(oof) as x, np.load(tmp_path / "ray" / oof.relative_to(tmp_path / "local")) as y:
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{oof.parent.name} {key}")
    assert not list((tmp_path / "ray").rglob("checkpoint.pt")) and not list((tmp_path / "ray").rglob("*.tmp"))
    assert len(via_ray) == len(local)


@pytest.mark.ray
@needs_ray
def test_ray_failed_cell_is_reported_and_the_others_are_kept(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = _tiny(tiny_dataset, **{"protocol.epochs": 1})
    broken = tmp_path / "run" / "cells" / "unet" / "fold0-seed0" / "metrics.json"
    broken.mkdir(parents=True)  # a folder where the cell's last file goes: the worker's final write fails

    with pytest.raises(BenchError, match=r"1 of 2 cells failed .*unet fold0-seed0: "):
        runner.run_grid(cfg, tmp_path / "run", archs=["unet"], progress=False, executor="ray", executor_options={"num_cpus": 2})
    assert (tmp_path / "run" / "cells" / "unet" / "fold1-seed0" / "metrics.json").is_file()
    assert not (tmp_path / "run" / "cells" / "unet" / "fold0-seed0" / "metrics.json").is_file()


@pytest.mark.ray
@needs_ray
def test_ray_request_no_node_can_meet_is_refused_not_queued_forever(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"--gpus-per-cell 0 --cpus-per-cell 2: no node .*\(1 CPU/0 GPU\)"):
        runner.run_grid(_tiny(tiny_dataset), tmp_path / "run", archs=["unet"], progress=False, executor="ray",
                   executor_options={"num_cpus": 1, "cpus_per_cell": 2})
    with pytest.raises(BenchError, match=r"runtime.device is cuda but --gpus-per-cell is 0"):
        runner.run_grid(_tiny(tiny_dataset, **{"runtime.device": "cuda"}), tmp_path / "run", archs=["unet"],
                   progress=False, executor="ray", executor_options={"num_cpus": 1, "gpus_per_cell": 0})


def _session_processes(sid: int) -> list[int]:
    """Processes still alive in session ``sid`` (zombies excluded)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                alive.append(int(entry.name))
    return alive


@pytest.mark.ray
@needs_ray
def test_ray_ctrl_c_cancels_and_the_run_resumes(tiny_dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # enough epochs that the run is still training when the first checkpoint (written in the background) appears
    args = [a for o in tiny_overrides(tiny_dataset, **{"protocol.epochs": 8}) for a in ("--set", o)]
    args += ["--config", str(QUICK), "--out", str(run_dir), "--archs", "unet", "--no-report"]
    # SIGINT as a terminal delivers it: a disposition of SIG_IGN inherited from this test process (something earlier
    # in the suite may leave it so) would make the run ignore Ctrl-C, which is not what is tested here
    proc = subprocess.Popen([*CLI, "run", *args, "--executor", "ray"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 300
        while not any(run_dir.glob("cells/*/*/checkpoint.pt")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        _, err = proc.communicate(timeout=120)
    finally:
        for pid in _session_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted; finished cells are kept" in err
    deadline = time.time() + 30  # Ray's own processes take a moment to exit, longer on a busy machine
    while _session_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.5)
    assert not _session_processes(proc.pid), "Ray processes outlived the interrupted run"

    resumed = subprocess.run([*CLI, "run", *args], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len(pd.read_csv(run_dir / "leaderboard.csv")) == 1


@pytest.mark.ray
def test_ray_missing_is_one_line(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(BenchError, match=r"pip install 'salt-bench\[ray\]'"):
        runner.run_grid(_tiny(tiny_dataset), tmp_path / "run", archs=["unet"], progress=False, executor="ray")


PG_PASSWORD = "s3cret-pw"  # in the storage URL; must never show up in a worker's output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1 (password auth) with an empty database; its URL."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql; "
                    ".ci/run installs it)")
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install 'salt-bench[postgres]')")
    import psycopg2

    bindir = bins[-1].parent
    root = Path(tempfile.mkdtemp(prefix="sbpg"))  # short: the server's socket path must fit in 107 bytes
    (root / "pw").write_text(PG_PASSWORD)
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = _free_port()
    data = root / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "bench", "--pwfile", str(root / "pw"),
                    "-A", "scram-sha-256", "--no-sync"], check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                    "-o", f"-k {root} -h 127.0.0.1 -p {port} -c fsync=off", "start"], check=True, capture_output=True)
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="bench", password=PG_PASSWORD, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE tune")
        conn.close()
        yield f"postgresql://bench:{PG_PASSWORD}@127.0.0.1:{port}/tune"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


SPACE = """\
sampler: {seed: 0, n_startup_trials: 10}
pruner: {name: none}
heartbeat: {interval: 1, grace_period: 5, max_retry: 2}
shared:
  train.optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


@pytest.mark.postgres
def test_tuning_workers_share_a_postgresql_study_and_a_killed_trial_is_failed_and_retried(
        postgres_url: str, tiny_dataset: Path, tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    sets = [a for o in tiny_overrides(tiny_dataset, **{"protocol.epochs": 4}) for a in ("--set", o)]

    def worker(out: str, n_trials: int) -> list[str]:
        return [*CLI, "tune", "--config", str(QUICK), *sets, "--arch", "unet", "--n-trials", str(n_trials),
                "--storage", postgres_url, "--study", "shared", "--space", str(space), "--out", str(tmp_path / out)]

    def launch(out: str) -> subprocess.Popen[str]:
        return subprocess.Popen(worker(out, 2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    reader = optuna.storages.RDBStorage(postgres_url)
    victim, other = launch("a"), launch("b")  # two workers, each adding 2 trials, at once on one study
    try:
        deadline, running, overlapped = time.time() + 300, [], False
        while time.time() < deadline and victim.poll() is None:
            try:
                trials = optuna.load_study(study_name="shared", storage=reader).get_trials(deepcopy=False)
            except KeyError:  # the study is not created yet
                trials = []
            assert not [t for t in trials if t.state.is_finished()], "a trial finished before both workers ran one"
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            # mid-trial = training, well past the first heartbeat: Optuna never fails a trial killed
            # between its creation and that first beat (it has no heartbeat to go stale)
            started = [t.datetime_start for t in trials if t.state == TrialState.RUNNING]
            overlapped = len(running) == 2 and all(datetime.datetime.now() - t > datetime.timedelta(seconds=2) for t in started)
            if overlapped:
                break
            time.sleep(0.1)
        assert overlapped, "the two workers never ran a trial at the same time"
        victim.kill()  # SIGKILL mid-trial: no cleanup, its trial is left RUNNING with a silent heartbeat
        victim_out, _ = victim.communicate()
        other_out, _ = other.communicate(timeout=300)
        assert other.returncode == 0, other_out
    finally:
        for proc in (victim, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # the victim's replacement: its 2 trials (maybe the retry of the killed one among them) finish the budget
    again = subprocess.run(worker("a", 2), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr

    trials = optuna.load_study(study_name="shared", storage=reader).get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(5)), "a trial number was lost or given twice"
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    states = [(t.number, t.state.name, t.system_attrs) for t in trials]
    assert len(by_state[TrialState.COMPLETE]) == 4, states
    assert len(by_state[TrialState.FAIL]) == 1 and not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING], states
    failed = by_state[TrialState.FAIL][0]
    assert failed.number in running, "the failed trial is not the one the killed worker was running"
    retries = [t for t in by_state[TrialState.COMPLETE] if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retries) == 1 and retries[0].params == failed.params, "the killed trial was not retried as it was"

    outputs = victim_out + other_out + again.stdout + again.stderr
    assert PG_PASSWORD not in outputs, "a worker printed the storage password"
    assert "postgresql://bench:***@127.0.0.1" in outputs
