"""PPO controller over per-layer options, with the MNAS soft-constraint reward.

Why this shape (the paper's baseline settings, NATS-Bench section): train batch 16 archs per
feedback, 10 PPO updates per feedback, each on a minibatch of 8 of those 16, and the MNAS reward
``accuracy * (cost / target) ** w`` with ``w = -0.07``.

Decisions the paper leaves open (written here so results can be reproduced):
- Policy: one independent categorical distribution per layer (logits, initialised uniform).
  Spaces here have few layers with many options each (NB201: 5, 25, 125), where a factorised
  policy is the usual choice (NATS-Bench's REINFORCE baseline uses one too); no RNN.
- Advantage: reward minus an exponential moving average of past rewards (decay 0.9, started at
  the first batch mean), divided by the batch's reward std, so the step size does not depend on
  whether accuracy is in % or in [0, 1].
- Objective: the clipped surrogate (clip 0.2) plus a small entropy bonus, maximised with Adam
  (lr 0.03) in numpy: a few hundred floats do not need torch.
- Failed evaluations (accuracy None) get reward 0.
"""

from __future__ import annotations

import numpy as np

from layernas.core.space import Space
from layernas.core.strategies.base import Arch, Strategy, Target

MNAS_W = -0.07


def mnas_reward(accuracy, cost, target: float, w: float = MNAS_W):
    """MNAS soft constraint: ``accuracy * (cost / target) ** w`` (elementwise for arrays)."""
    if target <= 0:
        raise ValueError(f"MNAS reward needs a positive cost target, got {target!r}")
    if isinstance(accuracy, float) and isinstance(cost, float):  # the hot path of evolution
        if cost <= 0:
            raise ValueError("MNAS reward needs positive costs")
        return accuracy * (cost / float(target)) ** w
    acc = np.asarray(accuracy, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if np.any(c <= 0):
        raise ValueError("MNAS reward needs positive costs")
    out = acc * (c / float(target)) ** w
    return float(out) if np.ndim(out) == 0 else out


class _Adam:
    def __init__(self, shapes: list[int], lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m = [np.zeros(n) for n in shapes]
        self.v = [np.zeros(n) for n in shapes]
        self.t = 0

    def ascend(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.t += 1
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            mh = m / (1 - self.b1**self.t)
            vh = v / (1 - self.b2**self.t)
            p += self.lr * mh / (np.sqrt(vh) + self.eps)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


class PPO(Strategy):
    """Each ask samples ``train_batch`` archs from the policy; each tell runs ``updates`` PPO
    steps on random minibatches of ``update_batch`` of them."""

    name = "ppo"

    def __init__(
        self,
        space: Space,
        target: Target,
        seed: int = 0,
        cost_kwargs: dict | None = None,
        train_batch: int = 16,
        update_batch: int = 8,
        updates: int = 10,
        w: float = MNAS_W,
        lr: float = 0.03,
        clip: float = 0.2,
        entropy: float = 0.01,
        baseline_decay: float = 0.9,
    ):
        super().__init__(space, target, seed, cost_kwargs)
        for k, v in (("train_batch", train_batch), ("update_batch", update_batch), ("updates", updates)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if update_batch > train_batch:
            raise ValueError(f"update_batch ({update_batch}) must be <= train_batch ({train_batch})")
        if target.hi <= 0:
            raise ValueError("PPO's MNAS reward needs a positive target max")
        self.train_batch, self.update_batch, self.updates = train_batch, update_batch, updates
        self.w, self.clip, self.entropy, self.decay = float(w), float(clip), float(entropy), float(baseline_decay)
        self.logits = [np.zeros(n) for n in space.sizes]
        self.opt = _Adam(list(space.sizes), lr)
        self.baseline: float | None = None
        self._asked: np.ndarray | None = None
        self._old_logp: np.ndarray | None = None

    def probs(self) -> list[np.ndarray]:
        return [np.exp(_log_softmax(z)) for z in self.logits]

    def _logp(self, archs: np.ndarray) -> np.ndarray:
        return sum(_log_softmax(z)[archs[:, j]] for j, z in enumerate(self.logits))

    def ask(self) -> list[Arch]:
        cols = [self.rng.choice(len(p), size=self.train_batch, p=p) for p in self.probs()]
        archs = np.stack(cols, axis=1).astype(np.int64)
        self._asked, self._old_logp = archs, self._logp(archs)
        return [tuple(int(x) for x in row) for row in archs]

    def reward(self, archs: np.ndarray, accs: np.ndarray) -> np.ndarray:
        r = mnas_reward(np.nan_to_num(accs, nan=0.0), self.cost(archs), self.target.hi, self.w)
        return np.where(np.isfinite(accs), r, 0.0)

    def tell(self, results: list[tuple[Arch, float | None]]) -> None:
        if self._asked is None:
            raise ValueError("tell() before ask()")
        got = {}
        for arch, acc in results:
            got[tuple(int(x) for x in arch)] = np.nan if acc is None else float(acc)
        asked = [tuple(int(x) for x in row) for row in self._asked]
        missing = [a for a in asked if a not in got]
        if missing:
            raise ValueError(f"tell() is missing results for {missing[:5]}")
        accs = np.array([got[a] for a in asked])
        rewards = self.reward(self._asked, accs)
        mean = float(rewards.mean())
        self.baseline = mean if self.baseline is None else self.decay * self.baseline + (1 - self.decay) * mean
        adv = (rewards - self.baseline) / (rewards.std() + 1e-8)
        for _ in range(self.updates):
            idx = self.rng.choice(self.train_batch, size=self.update_batch, replace=False)
            self.opt.ascend(self.logits, self._grad(self._asked[idx], self._old_logp[idx], adv[idx]))
        self._asked = self._old_logp = None

    def _grad(self, archs: np.ndarray, old_logp: np.ndarray, adv: np.ndarray) -> list[np.ndarray]:
        """Gradient of the clipped surrogate + entropy bonus w.r.t. each layer's logits."""
        ratio = np.exp(self._logp(archs) - old_logp)
        clipped = ((adv > 0) & (ratio > 1 + self.clip)) | ((adv < 0) & (ratio < 1 - self.clip))
        coef = np.where(clipped, 0.0, adv * ratio) / len(archs)  # d surrogate / d log pi(a)
        grads = []
        for j, z in enumerate(self.logits):
            p = np.exp(_log_softmax(z))
            g = -coef.sum() * p  # d log pi(a) / d z = onehot(a) - p
            np.add.at(g, archs[:, j], coef)
            logp = np.log(p + 1e-12)
            g += self.entropy * (-p * (logp - (p * logp).sum()))  # d H / d z
            grads.append(g)
        return grads
