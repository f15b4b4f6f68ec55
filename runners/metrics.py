"""Classification metrics of a set of predictions (scikit-learn), as the report's ``Metrics``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from tl_advise.schema.models import Metrics


def classification_metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                           class_names: Sequence[str], *, loss: float) -> Metrics:
    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    labels = list(range(len(class_names)))
    matrix = confusion_matrix(true, pred, labels=labels)
    support = matrix.sum(axis=1)
    present = support > 0
    per_class = {name: round(float(matrix[i, i] / support[i]), 6)
                 for i, name in enumerate(class_names) if present[i]}
    # A class absent from this split has no recall: balanced accuracy averages over present classes.
    balanced = float(np.mean([matrix[i, i] / support[i] for i in labels if present[i]])) if true.size else 0.0
    return Metrics(
        accuracy=round(float(accuracy_score(true, pred)) if true.size else 0.0, 6),
        balanced_accuracy=round(balanced, 6),
        macro_f1=round(float(f1_score(true, pred, labels=[i for i in labels if present[i]], average="macro",
                                      zero_division=0)) if true.size else 0.0, 6),
        per_class_accuracy=per_class,
        confusion_matrix=matrix.astype(int).tolist(),
        n_images=int(true.size),
        loss=round(float(loss), 6),
        correct="".join("1" if ok else "0" for ok in (true == pred).tolist()),
    )

