"""A small multilayer perceptron (PyTorch): median imputation, a signed log clipped to the training range and
standardized (:mod:`payfm.training.models.scaling`), two hidden layers, weighted BCE.

Early-stopped on the validation loss; saved as safetensors (weights, scaling) + JSON (shape). Explanations
are gradient x (input - typical input), a first-order attribution in log-odds.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(300, 3)); y = (X[:, 0] > 0).astype(int)
    >>> MLPModel(epochs=3, calibration="none").fit(X, y).predict_proba(X).shape
    (300,)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from payfm.training.models.base import Model, load_arrays, save_arrays
from payfm.training.models.scaling import Scaling


class _Net(nn.Module):
    def __init__(self, d_in: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x).squeeze(-1)  # (B,) logits
        return out


# The adaptive batch size (``batch_size`` None, the default): at least ~32 steps an epoch on small tables,
# batches of 32 to 1024 rows
ADAPTIVE_BATCH = (32, 1024)


def batch_rows(batch_size: int | None, rows: int) -> int:
    """The rows of each training batch: ``batch_size`` as given, else (None) ``rows // 32`` within
    :data:`ADAPTIVE_BATCH`. Every fit followed that rule before, whatever ``batch_size`` asked (found by a
    review); a default fit still trains as it did.

        >>> batch_rows(None, 3000), batch_rows(None, 10**6), batch_rows(8, 3000)
        (93, 1024, 8)
    """
    if batch_size is not None:
        return int(batch_size)
    low, high = ADAPTIVE_BATCH
    return max(low, min(high, rows // 32))


class MLPModel(Model):
    """Parameters: ``hidden`` (64), ``dropout`` (0.1), ``lr`` (1e-3), ``weight_decay`` (1e-5),
    ``epochs`` (10), ``batch_size`` (rows per step; None, the default: adaptive, :func:`batch_rows`; the
    size a fit used is ``batch_size_``), ``patience`` (epochs without validation improvement before
    stopping, 3), ``num_threads`` (torch threads while training, 1), ``transform`` of the inputs ("symlog",
    the default, or "none")."""

    kind = "mlp"
    _net64: _Net | None = None  # the scoring copy (float64), built at the first score after a fit or load
    PARAMS: ClassVar[dict[str, type]] = {
        "hidden": int,
        "dropout": float,
        "lr": float,
        "weight_decay": float,
        "epochs": int,
        "batch_size": int,
        "patience": int,
        "num_threads": int,
        "transform": str,
    }
    LIBRARIES: ClassVar[tuple[str, ...]] = ("torch",)
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "hidden": 64,
        "dropout": 0.1,
        "lr": 1e-3,
        "weight_decay": 1e-5,
        "epochs": 10,
        "batch_size": None,  # adaptive (batch_rows)
        "patience": 3,
        "num_threads": 1,
        "transform": "symlog",
    }

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
            "lr": trial.suggest_float("lr", 3e-4, 3e-3, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        }

    def _net(self, d: int) -> _Net:
        return _Net(d, int(self.setting("hidden")), float(self.setting("dropout")))

    def _inputs(self, X: np.ndarray, dtype: type = np.float32) -> torch.Tensor:
        z = self.scaling_.apply(np.where(np.isnan(X), self.medians_, X))
        return torch.from_numpy(np.clip(z, -20, 20).astype(dtype))

    def _scoring_net(self) -> _Net:
        """The trained net in float64, for scores: float32 matrix products differ in the last bits with the
        batch's size (a row scored alone and in a batch of 50 moved by 7e-9, and the calibration's slope
        passes that on), so a charge scored online and in a window would not score the same; in float64
        they agree to about 1e-16."""
        net = self._net64
        if net is None:
            net = self._net(len(self.scaling_.mean)).double()
            net.load_state_dict({k: v.double() for k, v in self.net_.state_dict().items()})
            net.eval()
            self._net64 = net
        return net

    def _fit(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        # A net this small trains fastest on one thread; more contend (10x slower measured on 2 cores).
        before = torch.get_num_threads()
        torch.set_num_threads(int(self.setting("num_threads")))
        try:
            self._train(X, y, w, X_val, y_val)
        finally:
            torch.set_num_threads(before)

    def _train(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        torch.manual_seed(self.seed)
        filled = np.where(np.isnan(X), self.medians_, X)
        self.scaling_ = Scaling.fit(filled, None, str(self._recorded("transform")))
        net = self._net(X.shape[1])
        opt = torch.optim.AdamW(
            net.parameters(),
            lr=float(self.setting("lr")),
            weight_decay=float(self.setting("weight_decay")),
        )
        xt, yt = self._inputs(X), torch.from_numpy(y.astype(np.float32))
        wt = torch.from_numpy((w / w.mean()).astype(np.float32))
        xv = yv = None
        if X_val is not None and y_val is not None:
            xv, yv = self._inputs(X_val), torch.from_numpy(y_val.astype(np.float32))
        bs = self.batch_size_ = batch_rows(self.setting("batch_size"), len(xt))
        best, bad = float("inf"), 0
        best_state = {k: v.clone() for k, v in net.state_dict().items()}
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(int(self.setting("epochs"))):
            net.train()
            for idx in torch.split(torch.randperm(len(xt), generator=gen), bs):
                loss = nn.functional.binary_cross_entropy_with_logits(net(xt[idx]), yt[idx], weight=wt[idx])
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]  # torch stub leaves it untyped
                opt.step()
            if xv is None or yv is None:
                continue
            net.eval()
            with torch.no_grad():
                vloss = float(nn.functional.binary_cross_entropy_with_logits(net(xv), yv))
            if vloss < best - 1e-6:
                best, bad = vloss, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                bad += 1
                if bad >= int(self.setting("patience")):
                    break
        if xv is not None:
            net.load_state_dict(best_state)
        net.eval()
        self.net_, self._net64 = net, None

    def _raw(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = torch.sigmoid(self._scoring_net()(self._inputs(X, np.float64))).numpy()
        return out

    def _contributions(self, X: np.ndarray) -> np.ndarray:
        x = self._inputs(X, np.float64).requires_grad_(True)
        (grad,) = torch.autograd.grad(self._scoring_net()(x).sum(), x)
        base = self._inputs(self.medians_[None, :], np.float64)
        out: np.ndarray = (grad * (x.detach() - base)).numpy()
        return out

    def _size(self) -> str:
        return f"{self.setting('hidden')} hidden units"

    def fitted_facts(self) -> dict[str, Any]:
        """The batch size the fit trained with (``batch_size`` None: the adaptive one), when known (a model
        saved before it was recorded does not say)."""
        bs = getattr(self, "batch_size_", None)
        return {} if bs is None else {"batch_size": int(bs)}

    def _save(self, path: Path) -> None:
        arrays = {f"net.{k}": v.detach().numpy() for k, v in self.net_.state_dict().items()}
        arrays |= self.scaling_.arrays()
        if getattr(self, "batch_size_", None) is not None:
            arrays["batch_size"] = np.array([self.batch_size_], dtype=np.int64)
        save_arrays(path / "mlp.safetensors", arrays)

    def _load(self, path: Path) -> None:
        a = load_arrays(path / "mlp.safetensors")
        self.scaling_ = Scaling.from_arrays(a)
        if "batch_size" in a:
            self.batch_size_ = int(a["batch_size"][0])
        net = self._net(len(self.scaling_.mean))
        net.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in a.items() if k.startswith("net.")})
        net.eval()
        self.net_, self._net64 = net, None
