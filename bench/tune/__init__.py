"""`salt-bench tune`: one Optuna study per architecture, resumable, on the benchmark's own protocol.

A trial lays its parameters over ``architectures.<arch>`` of the config (the only part allowed to
differ per architecture, so the protocol hash is unchanged), trains the chosen folds with the real
trainer and returns the mean validation TGS score of the kept checkpoint (the one the leaderboard
scores); tuning never reads the holdout, so a tuned architecture's holdout score is still unbiased.
``--all`` gives every architecture the
same space, budget and sampler seed. The best trial's section is written as ``<study>.best.yaml``,
a config layer that ``salt-bench run --config ... --config <study>.best.yaml`` uses as it is.

One job per module: ``space`` (the search space file), ``storage`` (opening ``--storage``), ``objective`` (a
trial), ``study`` (one study), ``output`` (trial lines, the summary, the best YAML), ``command`` (``tune``).
"""
from bench.tune.command import tune
from bench.tune.objective import OBJECTIVE, TRIAL_DIR, TrialFailed, empty_baseline, make_objective
from bench.tune.output import Outcome, format_outcome, trial_line, write_best
from bench.tune.storage import open_storage
from bench.tune.study import tune_arch

__all__ = ["OBJECTIVE", "TRIAL_DIR", "Outcome", "TrialFailed", "empty_baseline", "format_outcome", "make_objective",
           "open_storage", "trial_line", "tune", "tune_arch", "write_best"]
