"""Label-free preparation of the whole analysis, its repeated nested CV and permutation null.

Each permutation shuffles the discovery labels and reruns the whole training procedure: the
repeated nested CV (statistics against the permuted labels) and the final model with inner
tuning, whose predictions on the external and control sets (true labels) give their
"retrained" nulls. When the discovery cohort spans several sites, labels are shuffled within
each site only (exchangeability blocks), so a site's response rate is kept under the null.

The folds, CV repeats and permutations run in chunks through joblib (whichever backend
``ketabids.learning.backends`` set). A permutation's labels derive from the seed and its index
only, and every chunk limits BLAS to one thread, so the chunking, the backend and the number
of workers never change a result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from ketabids.learning.backends import shared
from ketabids.learning.engine import (
    CVResult,
    Data,
    FitResult,
    Prepared,
    Protocol,
    evaluate,
    make_split,
    plan_cv,
    prepare,
    run_cv,
)
from ketabids.learning.metrics import auc, balanced_accuracy


@dataclass
class Analysis:
    """Discovery rows, the prepared CV folds and the prepared final split (applied to ``apply_sets``)."""

    data: Data
    rows: np.ndarray
    cv: list[Prepared]
    final: Prepared
    apply_names: list[str]
    blocks: np.ndarray | None = None


def _prepare_all(data: Data, splits: list, classifier: str) -> list[Prepared]:
    with threadpool_limits(1):
        return [prepare(data, split, classifier) for split in splits]


def prepare_analysis(
    data: Data,
    rows: np.ndarray,
    y: np.ndarray,
    apply_sets: dict[str, np.ndarray],
    protocol: Protocol,
    seed: int,
    n_jobs: int = 1,
    blocks: np.ndarray | None = None,
) -> Analysis:
    """Draw the folds (stratified on the observed labels) and precompute every block.

    ``blocks`` (one code per row of the data, e.g. the site) restricts permutations to rows
    sharing a code; None permutes across all discovery rows.
    """
    splits = plan_cv(rows, y[rows].astype(int), protocol, seed)
    final = make_split(rows, y[rows].astype(int), list(apply_sets.values()), protocol.inner_folds, seed)
    chunks = [splits[i::n_jobs] for i in range(n_jobs)] if n_jobs > 1 else [splits]
    with shared(data) as on_workers:
        prepared = Parallel(n_jobs=len(chunks))(
            delayed(_prepare_all)(on_workers, chunk, protocol.classifier) for chunk in chunks
        )
    ordered: list[Prepared] = [None] * len(splits)  # type: ignore[list-item]
    for i, chunk in enumerate(prepared):
        ordered[i :: len(chunks)] = chunk
    return Analysis(
        data=data,
        rows=rows,
        cv=ordered,
        final=_prepare_all(data, [final], protocol.classifier)[0],
        apply_names=list(apply_sets),
        blocks=None if blocks is None else np.asarray(blocks),
    )


def _cv_chunk(
    analysis: Analysis, y: np.ndarray, protocol: Protocol, repeats: np.ndarray, weights: bool
) -> CVResult:
    """The CV repeats ``repeats`` (consecutive) of the analysis."""
    folds = protocol.outer_folds
    prepared = analysis.cv[repeats[0] * folds : (repeats[-1] + 1) * folds]
    with threadpool_limits(1):
        return run_cv(
            analysis.data,
            prepared,
            y,
            analysis.rows,
            replace(protocol, cv_repeats=len(repeats)),
            want_weights=weights,
        )


def cross_validate(
    analysis: Analysis, y: np.ndarray, protocol: Protocol, n_jobs: int = 1, *, want_weights: bool = False
) -> CVResult:
    """The repeated nested CV with labels ``y``, its repeats run in up to ``n_jobs`` parallel chunks."""
    chunks = np.array_split(np.arange(protocol.cv_repeats), min(n_jobs, protocol.cv_repeats))
    with shared(analysis) as on_workers:
        parts = Parallel(n_jobs=len(chunks))(
            delayed(_cv_chunk)(on_workers, y, protocol, chunk, want_weights) for chunk in chunks
        )
    return CVResult(
        decision=np.concatenate([part.decision for part in parts]),
        probability=np.concatenate([part.probability for part in parts]),
        fold=np.concatenate([part.fold for part in parts]),
        c_chosen=np.concatenate([part.c_chosen for part in parts]),
        weights=[w for part in parts for w in part.weights],
    )


def cv_statistics(result: CVResult, y_rows: np.ndarray) -> dict[str, float]:
    """BAC and AUC of the repeat-averaged decision."""
    return {
        "cv_balanced_accuracy": float(balanced_accuracy(y_rows, result.mean_decision > 0)),
        "cv_auc": float(auc(y_rows, result.mean_decision)),
    }


def apply_statistics(analysis: Analysis, result: FitResult, y: np.ndarray) -> dict[str, float]:
    """BAC and AUC of a final model on each apply set (participants with an outcome)."""
    stats = {}
    for i, (name, rows) in enumerate(zip(analysis.apply_names, analysis.final.split.apply, strict=True)):
        known = np.isfinite(y[rows])
        truth = y[rows][known]
        stats[f"{name}_balanced_accuracy"] = float(balanced_accuracy(truth, result.decisions[i][known] > 0))
        stats[f"{name}_auc"] = float(auc(truth, result.decisions[i][known]))
    return stats


def permuted_labels(
    y: np.ndarray, rows: np.ndarray, seed: int, index: int, blocks: np.ndarray | None = None
) -> np.ndarray:
    """``y`` with the labels of ``rows`` shuffled (within each block of ``blocks`` if given)."""
    permuted = y.copy()
    rng = np.random.default_rng([seed, index])
    codes = np.zeros(len(rows)) if blocks is None else np.asarray(blocks)[rows]
    for code in np.unique(codes):
        members = rows[codes == code]
        permuted[members] = rng.permutation(y[members])
    return permuted


def _run_chunk(
    analysis: Analysis, y: np.ndarray, protocol: Protocol, seed: int, indices: list[int]
) -> list[dict]:
    out = []
    with threadpool_limits(1):
        for index in indices:
            permuted = permuted_labels(y, analysis.rows, seed, index, analysis.blocks)
            cv = run_cv(analysis.data, analysis.cv, permuted, analysis.rows, protocol)
            stats = {"permutation": index, **cv_statistics(cv, permuted[analysis.rows])}
            stats.update(apply_statistics(analysis, evaluate(analysis.final, permuted, protocol), y))
            out.append(stats)
    return out


def null_distribution(
    analysis: Analysis, y: np.ndarray, protocol: Protocol, n_permutations: int, seed: int, n_jobs: int = 1
) -> pd.DataFrame:
    """One row per permutation: CV statistics (permuted labels) and apply-set statistics (true labels)."""
    if n_permutations < 1:
        return pd.DataFrame()
    n_chunks = max(1, min(n_jobs, n_permutations))
    chunks = [list(range(i, n_permutations, n_chunks)) for i in range(n_chunks)]
    with shared(analysis) as on_workers:
        results = Parallel(n_jobs=n_chunks)(
            delayed(_run_chunk)(on_workers, y, protocol, seed, chunk) for chunk in chunks
        )
    rows = [row for chunk in results for row in chunk]
    return pd.DataFrame(rows).sort_values("permutation").reset_index(drop=True)
