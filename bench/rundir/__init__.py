"""The run directory: its layout (``paths``) and the format of each file in it, in one place.

```
<run>/config.yaml  protocol.json  splits.json  holdout.json  env.json  data.npz  holdout.npz  ImageSets/
<run>/cells/<arch>/fold<k>-seed<s>/  metrics.json  history.csv  oof.npz  model.pt  checkpoint.pt
                                    claim  progress.json  (only while the cell trains)
<run>/aggregate.json  leaderboard.csv  per_image.csv  pairs.csv  gallery.npz  postprocess.json  ensembles.csv  submission.csv
<run>/report.html  holdout/<arch>-seed<s>.npz (fold ensembles)  holdout/<arch>-fold<k>-seed<s>.npz (each model)
<run>/classifier.csv  (runs with protocol.empty_head)  compare/<other run>.csv  (salt-bench compare)
<run>/tuning/<study>.db  <study>.best.yaml  <study>/trial-<n>/<cell>/
```

A file's format lives in its record: a dataclass with ``write(path)`` and ``read(path)``, the only code that
writes or parses that file (``cell``: metrics.json, oof.npz, history.csv, model.pt; ``run``: data.npz and
holdout.npz, holdout predictions, ensembles.csv, gallery.npz, config.yaml, protocol.json, postprocess.json,
env.json; ``split``: splits.json and holdout.json; ``tables``: aggregate.json and the CSV tables, each read with
its options and column types). Every read goes through ``guard.reading``, so a truncated, empty, garbage or
foreign file is a one-line ``BenchError`` naming it.
To add a run-directory file, give ``RunDir`` its path and write its record beside the others (reads guarded by
``guard.reading``), then call only that record from its writer and readers.
"""
from bench.rundir.cell import (
    CHECKPOINT,
    HISTORY,
    METRICS,
    MODEL,
    OOF,
    PROGRESS,
    CellProgress,
    CellRecord,
    History,
    OofPrediction,
    read_weights,
    write_weights,
)
from bench.rundir.paths import Cell, RunDir
from bench.rundir.run import (
    Ensembles,
    Environment,
    Gallery,
    HoldoutPrediction,
    ImageSet,
    PostprocessDecisions,
    ProtocolRecord,
    RunConfig,
)
from bench.rundir.split import HoldoutRecord, Splits

__all__ = ["CHECKPOINT", "HISTORY", "METRICS", "MODEL", "OOF", "PROGRESS", "Cell", "CellProgress", "CellRecord",
           "Ensembles", "Environment", "Gallery", "History", "HoldoutPrediction", "HoldoutRecord", "ImageSet",
           "OofPrediction", "PostprocessDecisions", "ProtocolRecord", "RunConfig", "RunDir", "Splits", "read_weights",
           "write_weights"]
