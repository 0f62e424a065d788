"""The paper's experiments: the α/β/γ grid search (step 1), the scaled family and the matched-MACs
comparison (step 2), and the demo that runs them end to end.

Modules: ``grid`` (candidates under α·β²·γ² ≈ 2, results; no torch), ``study`` (the shared Optuna
study: journal file or PostgreSQL), ``trials`` (one proxy training per candidate), ``compare``
(single-dimension vs compound arms at matched MACs), ``experiments`` (the steps as functions that
write their files), ``report`` (tables and plots of a search), ``demo`` (all of it on
Fashion-MNIST); step 0, the architecture search that finds the baseline: ``nas_space`` (MnasNet's
space as data), ``nas_objective`` (the rewards), ``nas`` (the search on the shared study),
``nas_report`` (its tables and plot; docs/nas.md).

This package never imports :mod:`effnet.deploy` (the import-linter contract in pyproject.toml).
The grid's public names are re-exported here, so ``from effnet.search import GridSettings``
keeps working from the days when ``effnet.search`` was one module.
"""

from effnet.search.grid import (
    Candidate,
    GridSettings,
    SearchResult,
    TrialRecord,
    grid_candidates,
    load_result,
    load_result_dict,
    rank_records,
)

__all__ = ["Candidate", "GridSettings", "SearchResult", "TrialRecord", "grid_candidates", "load_result",
           "load_result_dict", "rank_records"]
