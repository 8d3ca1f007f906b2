"""Classification metrics from a confusion matrix: accuracy, macro precision / recall / F1, top-k.

Macro averages follow scikit-learn's `average="macro", zero_division=0`: the mean over the classes that
occur in the labels or the predictions, a class never predicted scoring 0 precision. Tests compare every
number with scikit-learn's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts; row = true class, column = predicted class."""
    idx = y_true.long().flatten() * num_classes + y_pred.long().flatten()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes).cpu()


def classification_metrics(cm: torch.Tensor) -> dict[str, float]:
    cm = cm.double()
    tp = cm.diag()
    support = cm.sum(1)  # per true class
    predicted = cm.sum(0)  # per predicted class
    present = (support + predicted) > 0
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(tp))
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "precision": float(precision[present].mean()) if present.any() else 0.0,
        "recall": float(recall[present].mean()) if present.any() else 0.0,
        "f1": float(f1[present].mean()) if present.any() else 0.0,
    }


def topk_hits(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """How many rows have the true label among the k largest logits, as a 0-d tensor on the logits' device."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> int:
    return int(topk_hits(logits, y, k))


class MetricAccumulator:
    """Accumulates loss, confusion matrix and top-5 over the batches of one split."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        # Device tensors, synced once per split rather than once per batch (a sync stalls a GPU's queue).
        self._loss: list[torch.Tensor] = []  # summed loss of each batch
        self._pred: list[torch.Tensor] = []
        self._true: list[torch.Tensor] = []
        self._top5: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """`loss` is the batch mean; `logits` (B, K); `y` (B,)."""
        self._loss.append(loss.detach().float() * y.shape[0])
        self._pred.append(logits.argmax(1))
        self._true.append(y)
        if self.num_classes > 10:  # top-5 is only reported for many classes
            self._top5.append(topk_hits(logits, y, 5))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a mid-epoch checkpoint keeps: every batch's summed loss, predictions and labels so far (CPU)."""
        def cat(parts: list[torch.Tensor], stack: bool) -> torch.Tensor:
            if not parts:
                return torch.zeros(0, dtype=torch.float32 if stack else torch.int64)
            return (torch.stack(parts) if stack else torch.cat(parts)).cpu()

        return {"loss": cat(self._loss, True), "pred": cat(self._pred, False), "true": cat(self._true, False),
                "top5": cat(self._top5, True)}

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        """Continue from `state_dict()`'s batches, or from several ranks' merged (`merge_states`)."""
        # One tensor per saved batch for the sums: torch.stack(...).sum() then adds them in the same order.
        self._loss = list(state["loss"].to(device).unbind())
        self._top5 = list(state["top5"].to(device).unbind())
        self._pred = [state["pred"].to(device)] if len(state["pred"]) else []
        self._true = [state["true"].to(device)] if len(state["true"]) else []

    @staticmethod
    def merge_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Several ranks' states as one: `compute` sums counts over ranks, so one rank may hold them all."""
        return {k: torch.cat([s[k] for s in states]) for k in states[0]}

    def compute(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """Metrics of everything seen; `reduce` sums the per-process counts across ranks (distributed runs).

        Summing counts (loss sum, example count, top-5 hits, confusion matrix) gives exactly the metrics of
        the gathered predictions, as long as each example is seen by one rank only.
        """
        k = self.num_classes
        if self._true:
            y = torch.cat(self._true)
            cm = confusion_matrix(y, torch.cat(self._pred), k)
            top5 = float(torch.stack(self._top5).sum()) if self._top5 else 0.0
            local = [float(torch.stack(self._loss).sum()), float(y.shape[0]), top5]
        else:
            cm = torch.zeros(k, k, dtype=torch.int64)
            local = [0.0, 0.0, 0.0]
        packed = torch.cat([torch.tensor(local, dtype=torch.float64), cm.flatten().double()])
        if reduce is not None:
            packed = reduce(packed)
        loss_sum, n, top5 = packed[:3].tolist()
        cm = packed[3:].round().long().view(k, k)
        n = max(n, 1.0)
        out = {"loss": loss_sum / n, **classification_metrics(cm)}
        if k > 10:
            out["top5"] = top5 / n
        self.confusion = cm
        return out
