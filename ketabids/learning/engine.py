"""Fast repeated nested cross-validation, reusable across label permutations.

The procedure is that of ``GridSearchCV(build_pipeline(...), {"classifier__C": grid},
cv=StratifiedKFold(inner, shuffle=True), scoring="balanced_accuracy")`` inside repeated
stratified outer folds, organised so that it can be rerun a thousand times on permuted labels:

* the folds are drawn once (stratified on the observed labels) and kept for every permutation;
* preprocessing (covariate residualisation, scaling) is fitted on the training rows of every
  inner and outer split with the numpy functions the saved pipeline uses, and does not depend on
  the labels, so each split's kernel matrix is computed once and reused for every ``C`` and every
  permutation (the SVM is solved on the precomputed kernel);
* a C whose solution has no multiplier at its bound is the hard-margin solution, reused for the
  larger C values;
* decision values become probabilities through a Platt sigmoid fitted on the inner
  cross-validation's out-of-fold decision values of the chosen ``C``.

The SVM solver is scikit-learn's libsvm. ``SVC(kernel="precomputed")`` costs ~1 ms per fit in
input validation alone, 5-20 times the solve on these small kernels, which would break the
10-minute bar of the paper protocol (2.6 million fits). So the engine calls the libsvm binding
that ``SVC.fit`` calls (``sklearn.svm._libsvm.fit``, private) only after checking at import, on a
small fixed problem, that it gives the same support vectors, dual coefficients and intercepts as
the public ``SVC``; if the binding is missing or disagrees (a scikit-learn change), the engine
logs a warning and uses the public ``SVC`` (slower, same results). pyproject.toml bounds
scikit-learn to the versions this was checked with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

from ketabids.learning.metrics import balanced_accuracy, binary_metrics
from ketabids.learning.model import CLASSIFIERS, platt_apply, platt_fit
from ketabids.learning.preprocessing import transform_split

LOGGER = logging.getLogger("ketabids.group")

# An SVM solution on a precomputed kernel: support indices, dual coefficients (scikit-learn's
# sign: positive decision -> class 1) and intercept; decision = kernel[:, support] @ dual + intercept.
SvmSolution = tuple[np.ndarray, np.ndarray, float]


def _solve_public(kernel: np.ndarray, y: np.ndarray, c: float) -> SvmSolution:
    model = SVC(kernel="precomputed", C=c, class_weight="balanced", tol=1e-3, cache_size=200).fit(kernel, y)
    return model.support_, model.dual_coef_[0].copy(), float(model.intercept_[0])


def _libsvm_solver() -> Callable[[np.ndarray, np.ndarray, float], SvmSolution] | None:
    """The private libsvm binding of ``SVC.fit``, if it exists and matches ``SVC`` on a fixed problem."""
    try:
        from sklearn.svm import _libsvm

        _libsvm.set_verbosity_wrap(0)

        def solve(kernel: np.ndarray, y: np.ndarray, c: float) -> SvmSolution:
            support, _, _, dual, intercept, *_ = _libsvm.fit(
                kernel, y, svm_type=0, sample_weight=np.empty(0), class_weight=_class_weight(y),
                kernel="precomputed", C=c, tol=1e-3, cache_size=200,
            )  # fmt: skip
            return support, -dual[0], float(-intercept[0])

        rng = np.random.default_rng(20260101)
        z = rng.normal(size=(30, 6))
        y = (z[:, 0] + rng.normal(size=30) > 0.3).astype(np.float64)
        kernel = np.ascontiguousarray(z @ z.T)
        for c in (0.01, 1.0):
            mine, public = solve(kernel, y, c), _solve_public(kernel, y, c)
            same = np.array_equal(mine[0], public[0]) and np.allclose(mine[1], public[1], atol=1e-10)
            if not (same and abs(mine[2] - public[2]) < 1e-10):
                raise ValueError("libsvm binding and SVC disagree")
        return solve
    except Exception as err:  # any change of the private binding: fall back to the public SVC
        LOGGER.warning("using the slower public SVC: scikit-learn's libsvm binding changed (%s)", err)
        return None


@dataclass(frozen=True)
class Protocol:
    """Classifier and validation scheme (the paper's defaults)."""

    classifier: str = "svm-linear"
    c_grid: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
    cv_repeats: int = 10
    outer_folds: int = 10
    inner_folds: int = 5

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier '{self.classifier}'; choose from {', '.join(CLASSIFIERS)}")
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ValueError("the C grid needs at least one positive value")
        if self.cv_repeats < 1 or self.outer_folds < 2 or self.inner_folds < 2:
            raise ValueError("need at least 1 repeat, 2 outer folds and 2 inner folds")


@dataclass
class Data:
    """All participants' features and covariates (rows = participants)."""

    features: np.ndarray
    covariates: np.ndarray


@dataclass
class Split:
    """Training rows, row sets to predict, and the inner folds (positions within ``train``)."""

    train: np.ndarray
    apply: list[np.ndarray]
    inner: list[tuple[np.ndarray, np.ndarray]]


@dataclass
class _Block:
    """What a classifier needs from one train/apply partition: kernels (SVM) or features (logistic)."""

    train: np.ndarray
    others: list[np.ndarray]


@dataclass
class Prepared:
    """A split with every inner and outer block computed (label-free, reusable)."""

    split: Split
    inner: list[_Block]
    outer: _Block


@dataclass
class FitResult:
    """A model tuned and fitted on a split's training rows, applied to its ``apply`` row sets;
    ``oof``: the inner cross-validation's out-of-fold decisions of the chosen C (training rows)."""

    c_index: int
    platt: tuple[float, float]
    decisions: list[np.ndarray]
    coef: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None
    oof: np.ndarray | None = None

    def probabilities(self, which: int) -> np.ndarray:
        return platt_apply(self.decisions[which], *self.platt)


@dataclass
class CVResult:
    """Out-of-fold decisions and probabilities per repeat (repeats x participants), the outer fold of
    every participant in every repeat, chosen C, weights."""

    decision: np.ndarray
    probability: np.ndarray
    fold: np.ndarray
    c_chosen: np.ndarray
    weights: list[np.ndarray] = field(default_factory=list)

    @property
    def mean_decision(self) -> np.ndarray:
        return self.decision.mean(axis=0)

    @property
    def mean_probability(self) -> np.ndarray:
        return self.probability.mean(axis=0)

    def fold_metrics(self, y: np.ndarray) -> list[dict[str, float]]:
        """``binary_metrics`` of the decision on each outer test fold of each repeat."""
        out = []
        for repeat in range(self.decision.shape[0]):
            for fold in np.unique(self.fold[repeat]):
                members = self.fold[repeat] == fold
                d = self.decision[repeat, members]
                out.append(binary_metrics(y[members], d > 0, d, n_bootstrap=0))
        return out


def _block(classifier: str, z_train: np.ndarray, z_others: list[np.ndarray]) -> _Block:
    if classifier == "logistic":
        return _Block(z_train, z_others)
    if classifier == "svm-linear":
        return _Block(np.ascontiguousarray(z_train @ z_train.T), [z @ z_train.T for z in z_others])
    var = z_train.var()
    gamma = 1.0 / (z_train.shape[1] * var) if var > 0 else 1.0  # scikit-learn's gamma="scale"
    train_sq = (z_train**2).sum(axis=1)

    def rbf(z: np.ndarray) -> np.ndarray:
        sq = (z**2).sum(axis=1)[:, None] + train_sq[None, :] - 2 * z @ z_train.T
        return np.exp(-gamma * np.maximum(sq, 0))

    return _Block(np.ascontiguousarray(rbf(z_train)), [rbf(z) for z in z_others])


def make_split(
    rows: np.ndarray, y: np.ndarray, apply: list[np.ndarray], inner_folds: int, seed: int
) -> Split:
    """A split training on ``rows`` with stratified shuffled inner folds (``y`` = labels of ``rows``)."""
    splitter = StratifiedKFold(inner_folds, shuffle=True, random_state=seed)
    return Split(train=rows, apply=apply, inner=list(splitter.split(np.zeros(len(rows)), y)))


def plan_cv(rows: np.ndarray, y: np.ndarray, protocol: Protocol, seed: int) -> list[Split]:
    """Repeated stratified outer folds over ``rows`` (``y`` = their labels), each with its inner folds."""
    seeds = np.random.default_rng(seed).integers(
        0, 2**31 - 1, size=(protocol.cv_repeats, 1 + protocol.outer_folds)
    )
    splits = []
    for repeat in range(protocol.cv_repeats):
        outer = StratifiedKFold(protocol.outer_folds, shuffle=True, random_state=int(seeds[repeat, 0]))
        for fold, (train, test) in enumerate(outer.split(np.zeros(len(rows)), y)):
            splits.append(
                make_split(
                    rows[train], y[train], [rows[test]], protocol.inner_folds, int(seeds[repeat, 1 + fold])
                )
            )
    return splits


def prepare(data: Data, split: Split, classifier: str) -> Prepared:
    """Fit the preprocessing of every inner and outer partition and compute their blocks."""
    inner = []
    for train, test in split.inner:
        z_train, z_others = transform_split(
            data.features, data.covariates, split.train[train], [split.train[test]]
        )
        inner.append(_block(classifier, z_train, z_others))
    z_train, z_others = transform_split(data.features, data.covariates, split.train, split.apply)
    return Prepared(split=split, inner=inner, outer=_block(classifier, z_train, z_others))


def _class_weight(y: np.ndarray) -> np.ndarray:
    counts = np.bincount(y.astype(int), minlength=2)
    return len(y) / (2.0 * np.maximum(counts, 1))


_SOLVE = _libsvm_solver() or _solve_public


def fit_decisions(
    classifier: str, block: _Block, y_train: np.ndarray, c_values: tuple[float, ...]
) -> tuple[list[np.ndarray], list]:
    """For each C: decision values on each of the block's other row sets ((n_C, n_rows) per set).

    Also returns per C the fitted coefficients: ``(support, dual)`` for SVMs, the weight vector for
    logistic regression. A training set with a single class gives zero decisions.
    """
    y_train = y_train.astype(np.float64)
    decisions = [np.zeros((len(c_values), len(k))) for k in block.others]
    coefs: list = [None] * len(c_values)
    if np.unique(y_train).size < 2:
        return decisions, coefs
    if classifier == "logistic":
        for i, c in enumerate(c_values):
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(block.train, y_train)
            for out, z in zip(decisions, block.others, strict=True):
                out[i] = model.decision_function(z)
            coefs[i] = model.coef_[0].copy()
        return decisions, coefs
    class_weight = _class_weight(y_train)
    solved: tuple | None = None
    for i in np.argsort(c_values, kind="stable"):
        c = c_values[i]
        if solved is None or solved[0]:
            support, dual, intercept = _SOLVE(block.train, y_train, c)
            # no multiplier at its bound: the hard-margin solution, also optimal for every larger C
            at_bound = np.abs(dual) >= c * class_weight[y_train[support].astype(int)] * (1 - 1e-6)
            solved = (bool(at_bound.any()), support, dual, intercept)
        _, support, dual, intercept = solved
        for out, k in zip(decisions, block.others, strict=True):
            out[i] = k[:, support] @ dual + intercept
        coefs[i] = (support, dual)
    return decisions, coefs


def evaluate(prepared: Prepared, y: np.ndarray, protocol: Protocol) -> FitResult:
    """Tune C on the inner folds (mean BAC, first best on ties), refit, predict the apply sets.

    ``y`` holds labels for all rows of the data (only the split's training rows are read).
    """
    split = prepared.split
    y_train = y[split.train].astype(int)
    n_c = len(protocol.c_grid)
    oof = np.empty((n_c, len(split.train)))
    scores = np.empty((n_c, len(split.inner)))
    for fold, ((train, test), block) in enumerate(zip(split.inner, prepared.inner, strict=True)):
        (decision,), _ = fit_decisions(protocol.classifier, block, y_train[train], protocol.c_grid)
        oof[:, test] = decision
        scores[:, fold] = balanced_accuracy(y_train[test], decision > 0)
    best = int(np.argmax(scores.mean(axis=1)))
    decisions, coefs = fit_decisions(protocol.classifier, prepared.outer, y_train, (protocol.c_grid[best],))
    return FitResult(
        c_index=best,
        platt=platt_fit(oof[best], y_train),
        decisions=[d[0] for d in decisions],
        coef=coefs[0],
        oof=oof[best],
    )


def primal_weights(data: Data, split: Split, result: FitResult, classifier: str) -> np.ndarray | None:
    """Weights of a linear model in the standardised feature space (positive -> response)."""
    if result.coef is None or classifier == "svm-rbf":
        return None
    if classifier == "logistic":
        return np.asarray(result.coef)
    support, dual = result.coef
    z_train, _ = transform_split(data.features, data.covariates, split.train, [])
    return dual @ z_train[support]


def run_cv(
    data: Data,
    prepared: list[Prepared],
    y: np.ndarray,
    rows: np.ndarray,
    protocol: Protocol,
    *,
    want_weights: bool = False,
) -> CVResult:
    """Evaluate every outer fold with labels ``y``; gather out-of-fold results for ``rows`` per repeat."""
    position = {row: i for i, row in enumerate(rows)}
    decision = np.full((protocol.cv_repeats, len(rows)), np.nan)
    probability = np.full_like(decision, np.nan)
    folds = np.full(decision.shape, -1)
    c_chosen = np.empty((protocol.cv_repeats, protocol.outer_folds))
    weights = []
    for index, item in enumerate(prepared):
        repeat, fold = divmod(index, protocol.outer_folds)
        result = evaluate(item, y, protocol)
        columns = [position[row] for row in item.split.apply[0]]
        decision[repeat, columns] = result.decisions[0]
        probability[repeat, columns] = result.probabilities(0)
        folds[repeat, columns] = fold
        c_chosen[repeat, fold] = protocol.c_grid[result.c_index]
        if want_weights:
            w = primal_weights(data, item.split, result, protocol.classifier)
            if w is not None:
                weights.append(w)
    return CVResult(
        decision=decision, probability=probability, fold=folds, c_chosen=c_chosen, weights=weights
    )
