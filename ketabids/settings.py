"""Plain settings records handed from the command line to each analysis level (no global config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ParticipantSettings:
    """Everything the participant level needs."""

    bids_dir: Path
    output_dir: Path
    work_dir: Path
    participant_labels: tuple[str, ...]
    session_labels: tuple[str, ...] = ()
    atlas: str = "neuromorphometrics"
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float = 4.0
    random_seed: int = 0


@dataclass(frozen=True)
class ColumnNames:
    """Names of the ``participants.tsv`` / ``phenotype`` columns the group level reads."""

    participant_id: str = "participant_id"
    treatment: str = "treatment"
    cohort: str = "cohort"
    site: str = "site"
    age: str = "age"
    sex: str = "sex"
    madrs_pre: str = "madrs_pre"
    madrs_post: str = "madrs_24h"


DEFAULT_RESPONSE_THRESHOLD = 0.5


@dataclass(frozen=True)
class GroupSettings:
    """Everything the group level needs."""

    bids_dir: Path
    output_dir: Path
    participant_labels: tuple[str, ...] = ()
    session_label: str | None = None
    atlas: str = "neuromorphometrics"
    features: str = "roi"
    classifier: str = "svm-linear"
    covariates: tuple[str, ...] = ("tiv",)
    cv_repeats: int = 10
    outer_folds: int = 10
    inner_folds: int = 5
    c_grid: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
    n_permutations: int = 1000
    response_threshold: float | None = None  # None: 0.5 when training, the model card's with a model
    discovery_cohort: str = "discovery"
    model_file: Path | None = None
    force_model: bool = False  # apply despite a threshold or major library-version mismatch
    conformal_alpha: float = 0.10  # error level of the conformal prediction sets
    adapt_site: bool = False  # with model_file: map unseen sites onto the training cohort (ComBat)
    recalibrate: bool = False  # with model_file: refit its sigmoid on local outcomes (child model)
    n_jobs: int = 1
    parallel_backend: str = "loky"  # joblib backend of CV repeats and permutations: loky or dask
    dask_scheduler: str | None = None  # with dask: the scheduler's address; None: a local cluster
    dask_timeout: float = 30.0  # seconds to reach the scheduler and its first worker
    random_seed: int = 0
    allow_mixed_versions: bool = False
    columns: ColumnNames = field(default_factory=ColumnNames)

    @property
    def threshold(self) -> float:
        """The response threshold in force (the default when none was given)."""
        return DEFAULT_RESPONSE_THRESHOLD if self.response_threshold is None else self.response_threshold
