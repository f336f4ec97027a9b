"""Optimisers: AdamW for Euclidean parameters, RiemannianAdam for manifold ones."""

from __future__ import annotations

import math

import torch


class HybridOptimizer:
    """AdamW + geoopt.optim.RiemannianAdam behind one step()/zero_grad()/state_dict()."""

    def __init__(self, model: torch.nn.Module, lr: float = 2e-4, weight_decay: float = 0.01,
                 manifold_lr: float | None = None):
        import geoopt

        manifold, euclidean = [], []
        for p in model.parameters():
            if not p.requires_grad:
                continue
            (manifold if isinstance(p, geoopt.ManifoldParameter) else euclidean).append(p)
        self.params = manifold + euclidean
        self.optimizers = []
        if euclidean:
            self.optimizers.append(torch.optim.AdamW(euclidean, lr=lr, weight_decay=weight_decay))
        if manifold:
            self.optimizers.append(geoopt.optim.RiemannianAdam(manifold, lr=manifold_lr or lr, stabilize=10))
        self.num_manifold, self.num_euclidean = len(manifold), len(euclidean)

    @property
    def param_groups(self):
        return [g for opt in self.optimizers for g in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def clip_and_step(self, max_norm: float = 1.0) -> float:
        """Clip the global gradient norm over all parameters and step; returns the norm.
        A non-finite gradient skips the step (the caller sees a nan/inf norm)."""
        if max_norm:
            norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        else:
            norm = float(torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in self.params if p.grad is not None)))
        if not math.isfinite(norm):
            self.zero_grad()
            return norm
        for opt in self.optimizers:
            opt.step()
        return norm

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != len(self.optimizers):
            raise ValueError("optimizer state does not match this model's parameter groups")
        for opt, st in zip(self.optimizers, states):
            opt.load_state_dict(st)
