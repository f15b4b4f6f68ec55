"""LogME (You et al., ICML 2021): the log marginal evidence of a Bayesian linear model on frozen features.

No maintained package computes it, so it is written here from the paper's fixed-point formulation
(the evidence is maximised over the prior precision alpha and the noise precision beta, one target
column at a time, through one SVD of the features). Higher means the features fit the labels better.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-5


def logme(features: np.ndarray, labels: np.ndarray, *, max_iter: int = 11, tol: float = 1e-3) -> float:
    """Mean per-class LogME of ``features`` (n, d) for integer ``labels`` (n,)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n = f.shape[0]
    u, singular = _thin_svd(f)
    sigma = singular**2
    evidences = []
    for cls in np.unique(y):
        target = (y == cls).astype(np.float64)
        proj = u.T @ target  # the target in the features' left singular basis
        proj2 = proj**2
        outside = float(target @ target - proj2.sum())  # energy orthogonal to the feature span
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            ratio = alpha / beta
            gamma = float((sigma / (sigma + ratio)).sum())
            weight_norm2 = float((sigma * proj2 / (ratio + sigma) ** 2).sum())
            residual2 = float((proj2 / (1 + sigma / ratio) ** 2).sum()) + outside
            alpha = gamma / (weight_norm2 + _EPS)
            beta = (n - gamma) / (residual2 + _EPS)
            if abs(alpha / beta - ratio) / ratio <= tol:
                break
        # log|alpha I + beta F^T F| has d - rank terms log(alpha) from the null space; they cancel
        # d/2 log(alpha) down to rank/2 log(alpha).
        evidence = (
            sigma.size / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * sigma))
            - beta / 2.0 * residual2 - alpha / 2.0 * weight_norm2
            - n / 2.0 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def _thin_svd(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors and singular values of the non-null part of ``f``."""
    n, d = f.shape
    if n > d:  # the d×d Gram matrix is cheaper than an SVD of the tall matrix
        eigvals, v = np.linalg.eigh(f.T @ f)
        order = np.argsort(eigvals)[::-1]
        singular = np.sqrt(np.clip(eigvals[order], 0, None))
        v = v[:, order]
        rank = int((singular > 1e-10).sum())
        singular, v = singular[:rank], v[:, :rank]
        return (f @ v) / singular, singular
    u, singular, _ = np.linalg.svd(f, full_matrices=False)
    rank = int((singular > 1e-10).sum())
    return u[:, :rank], singular[:rank]
