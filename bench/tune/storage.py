"""Where studies live: ``--storage`` opened once, its URL masked in every message."""
from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from bench.errors import BenchError, summary
from bench.redact import mask_url
from bench.tune.space import Space


def open_storage(url: str, space: Space) -> optuna.storages.BaseStorage:
    """``journal://PATH`` is a journal file (several processes on one machine); anything else is an RDB
    URL (sqlite, postgresql, ...) with heartbeats, so a dead worker's trial is failed and re-queued."""
    if url.startswith("journal://"):
        path = Path(url.removeprefix("journal://"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as exc:  # its file name is the URL's: masked like the URL
            raise BenchError(f"--storage {mask_url(url)}: cannot open ({exc.strerror or mask_url(summary(exc))})") from None
        return optuna.storages.JournalStorage(backend)
    hb = space.heartbeat
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=hb["interval"], grace_period=hb["grace_period"],
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=hb["max_retry"]),
            )
    except Exception as exc:  # sqlalchemy raises many types (bad URL, missing driver, refused connection)
        raise BenchError(f"--storage {mask_url(url)}: cannot open ({mask_url(summary(exc))})") from None
