"""The function-preserving rescale of the weak protocols (DESIGN.md, "Verdicts").

A planted network computes ``output_scale`` x the ticket with ``output_scale`` around 1e-4, and Adam moves every
weight by about lr per step, so training a planted mask as it stands first destroys the ticket. Before each weak
training phase every mask's network is therefore rescaled by one rule, fitted on the training data:

- per-output factors c > 0 (regression: the least-squares factor per output, or the ratio of RMS values where
  that factor is not positive; classification: the one positive temperature of `fit_temperature`);
- with g the geometric mean of c and L the depth: every layer's weights x g^(1/L), layer l's biases x g^(l/L)
  (l = 1..L), the output rows (weights and bias) x c_k / g;
- then (``rescale="fit"``, the default; ``"fit-even"`` stops above) every hidden neuron is balanced, layer by
  layer from the input: its kept incoming weights and bias x a, its kept outgoing weights / a, with
  a = sqrt(|outgoing| / |incoming|) (L2 norms), so that both norms become their geometric mean.

By the positive homogeneity of ReLU the network then computes c * (its old function): the same function, read at
the fitted scale. The rescale is skipped when the fitted read-out is no better than a zero output (regression)
or no positive temperature exists (classification): such a mask carries no signal.
Spreading g as g^(1/L) over the layers matters: all of it in the output layer left the circle oracle at 0.792 at
depth 9, all in the first layer at 0.932, spread at 0.96 (issue 14's prototype). Balancing the neurons matters in
wide hosts, whose planted ticket neurons carry the host's small He magnitudes (std sqrt(2/1000) at width 1000)
so that Adam's steps of about lr are large against them: bench/RESULTS.md, "Ticket oracle", compares "fit" with
"fit-even" and "none".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .spec import RESCALE_MODES as MODES  # the spec owns the option's values

Tensor = torch.Tensor

TEMPERATURE_CAP = 1e12  # fit_temperature stops at TEMPERATURE_CAP / max|z| (logits that separate the data)


def check_mode(mode: object) -> str:
    """`mode` when it is one of `MODES`, else a ValueError naming the option."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"rescale must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    return mode


def positive_factors(outputs: Tensor, targets: Tensor, dim: int = 0) -> Tensor:
    """Per-output factors c > 0 mapping outputs onto targets, reduced over `dim` (samples), in float64.

    c = <o, y> / <o, o> where that is positive, else rms(y) / rms(o) (a ReLU network cannot flip a sign by
    rescaling); NaN where an output is identically zero (no factor reaches it).
    """
    o = outputs.detach().to(torch.float64)
    y = targets.detach().to(torch.float64).reshape(o.shape)
    num = (o * y).sum(dim=dim)
    den = (o * o).sum(dim=dim)
    safe = torch.where(den > 0, den, torch.ones_like(den))
    ls = num / safe
    rms = torch.sqrt((y * y).sum(dim=dim) / safe)
    c = torch.where(ls > 0, ls, rms)
    return torch.where((den > 0) & torch.isfinite(c) & (c > 0), c, torch.full_like(c, math.nan))


def fit_factors(outputs: Tensor, targets: Tensor, kind: str) -> Tensor | None:
    """The per-output factors c (float64, (K,)) of the rescale rule, or None when it is skipped.

    Regression: `positive_factors`, skipped when the read-out c * o is no better than a zero output on these
    data; outputs that are identically zero take the geometric mean of the others (scaling them changes
    nothing). Classification: the positive temperature t of `fit_temperature` for every output, skipped when
    t is 0 (no information) or at its cap (separable data: t would grow without bound).
    """
    K = outputs.shape[-1]
    if kind == "classification":
        z = outputs.detach().to(torch.float64)
        t = fit_temperature(z, targets.reshape(-1))
        zmax = float(z.abs().max()) if z.numel() else 0.0
        if not (t > 0 and math.isfinite(t)) or (zmax > 0 and t >= 0.999 * TEMPERATURE_CAP / zmax):
            return None
        return torch.full((K,), t, dtype=torch.float64)
    c = positive_factors(outputs.reshape(outputs.shape[0], -1), targets.reshape(outputs.shape[0], -1))
    ok = torch.isfinite(c)
    if not bool(ok.any()):
        return None
    g = torch.exp(torch.log(c[ok]).mean())
    c = torch.where(ok, c, g)
    o = outputs.detach().to(torch.float64).reshape(outputs.shape[0], -1)
    y = targets.detach().to(torch.float64).reshape(o.shape)
    fitted = ((o * c - y) ** 2).mean()
    if not bool(fitted < (y * y).mean()):
        return None
    return c


@dataclass(frozen=True)
class Rescale:
    """The multipliers of one network's rescale: layer l's weight (j, i) is multiplied by ``w_scale[l][j] *
    w_cols[l][i]`` and its bias j by ``b_scale[l][j]`` (float64); ``g`` is the geometric mean of the factors."""

    w_scale: tuple[Tensor, ...]
    b_scale: tuple[Tensor, ...]
    g: float
    w_cols: tuple[Tensor, ...] | None = None  # per-input factors of each layer (None: all 1)

    @classmethod
    def from_factors(cls, c: Tensor, widths: Sequence[int]) -> "Rescale":
        """The rule's multipliers for a network with layer output sizes `widths` (the last is K)."""
        c = c.to(torch.float64)
        L = len(widths)
        g = float(torch.exp(torch.log(c).mean()))
        w_scale, b_scale = [], []
        for l, n in enumerate(widths, start=1):
            w = torch.full((n,), g ** (1.0 / L), dtype=torch.float64)
            b = torch.full((n,), g ** (l / L), dtype=torch.float64)
            if l == L:
                w = w * (c / g)
                b = b * (c / g)
            w_scale.append(w)
            b_scale.append(b)
        return cls(tuple(w_scale), tuple(b_scale), g)

    def balanced(self, weights: Sequence[Tensor], biases: Sequence[Tensor], mask) -> "Rescale":
        """This rescale followed by balancing every hidden neuron of the masked network (see the module doc);
        neurons without kept incoming or outgoing parameters keep a = 1."""
        w_scale, b_scale = [t.clone() for t in self.w_scale], [t.clone() for t in self.b_scale]
        cols = [torch.ones(w.shape[1], dtype=torch.float64) for w in weights] if self.w_cols is None \
            else [t.clone() for t in self.w_cols]
        kept_w = [w.detach().to(torch.float64).cpu() * wm.cpu() for w, (wm, _) in zip(weights, mask)]
        kept_b = [b.detach().to(torch.float64).cpu() * bm.cpu() for b, (_, bm) in zip(biases, mask)]
        for l in range(len(weights) - 1):
            w_in = kept_w[l] * w_scale[l].unsqueeze(1) * cols[l].unsqueeze(0)
            n_in = (w_in.pow(2).sum(1) + (kept_b[l] * b_scale[l]).pow(2)).sqrt()
            w_out = kept_w[l + 1] * w_scale[l + 1].unsqueeze(1) * cols[l + 1].unsqueeze(0)
            n_out = w_out.pow(2).sum(0).sqrt()
            ok = (n_in > 0) & (n_out > 0) & torch.isfinite(n_in) & torch.isfinite(n_out)
            a = torch.where(ok, (n_out / torch.where(ok, n_in, torch.ones_like(n_in))).sqrt(), torch.ones_like(n_in))
            w_scale[l] = w_scale[l] * a
            b_scale[l] = b_scale[l] * a
            cols[l + 1] = cols[l + 1] / a
        return Rescale(tuple(w_scale), tuple(b_scale), self.g, tuple(cols))

    def apply(self, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The rescaled parameters (new tensors; float64 multipliers rounded once to each tensor's dtype)."""
        return self._times(weights, biases, inverse=False)

    def divide_out(self, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The parameters back in the planted parametrisation (what pruners score)."""
        return self._times(weights, biases, inverse=True)

    def _times(self, weights, biases, inverse: bool):
        W, B = [], []
        cols = self.w_cols or [None] * len(self.w_scale)
        for w, b, sw, sb, sc in zip(weights, biases, self.w_scale, self.b_scale, cols):
            fw = sw.to(w.device).unsqueeze(1)
            if sc is not None:
                fw = fw * sc.to(w.device).unsqueeze(0)
            fb = sb.to(b.device)
            if inverse:
                fw, fb = 1.0 / fw, 1.0 / fb
            W.append((w.to(torch.float64) * fw).to(w.dtype))
            B.append((b.to(torch.float64) * fb).to(b.dtype))
        return W, B


# ------------------------------------------------------------------------------------------------ fitted scales

def fit_regression_scale(outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-output positive factors (`plantseek.rescale.positive_factors`: the least-squares factor where it is
    positive, else the ratio of RMS values; 0 where an output is identically 0). A ReLU network cannot flip a
    sign by rescaling, so neither may its read-out.

    outputs, targets: (N, K). Returns (K,) on the outputs' device and dtype.
    """
    c = positive_factors(outputs, targets)
    return torch.nan_to_num(c, nan=0.0).to(device=outputs.device, dtype=outputs.dtype)


def fit_temperature(logits: Tensor, labels: Tensor, iterations: int = 100) -> float:
    """The positive factor t minimising the mean cross-entropy of ``t * logits`` (a 1-D convex problem).

    f(t) = CE(t z) is convex with f'(t) = mean(E_p[z] - z_label) and f''(t) = mean(Var_p[z]) (p = softmax(t z));
    the root of f' is found by Newton steps kept inside a bracket (bisection in log t when a step leaves it).
    Returns 0 when even a tiny t does not help (f'(0) >= 0: the logits carry no information) and the cap
    TEMPERATURE_CAP / max|z| when the logits separate the training data so that the loss keeps falling as t grows.
    """
    z = logits.detach()
    z_lab = z.gather(1, labels.reshape(-1, 1)).squeeze(1)
    # classes-major (K, N): a softmax over a handful of classes per sample runs 6x to 10x faster along the
    # leading dimension than along the last (8000 x 2 float64 here: 0.04 ms against 0.25 to 0.45 ms), and this
    # fit runs once per run and multishot round before training (issue 18's profile: 16% of a circle group)
    zt = z.t().contiguous()
    zt2 = zt * zt

    def derivs(t: float) -> tuple[float, float]:
        p = torch.softmax(zt * t, dim=0)
        ez = (p * zt).sum(dim=0)
        d1 = (ez - z_lab).mean()
        d2 = ((p * zt2).sum(dim=0) - ez * ez).mean()
        return float(d1), float(d2)

    if derivs(0.0)[0] >= 0:
        return 0.0
    zmax = float(z.abs().max())
    if not math.isfinite(zmax) or zmax == 0:
        return 0.0
    limit = TEMPERATURE_CAP / zmax
    lo, hi = 0.0, math.inf
    t = 1.0 / zmax
    for _ in range(iterations):
        d1, d2 = derivs(t)
        if d1 < 0:
            lo = t
        else:
            hi = t
        if d1 == 0:
            return t
        step = t - d1 / d2 if d2 > 0 else math.nan
        if math.isfinite(step) and lo < step < hi:
            new = step
        elif math.isinf(hi):
            new = t * 4.0
        else:
            new = math.sqrt(lo * hi) if lo > 0 else hi / 2.0
        if new >= limit:
            if derivs(limit)[0] < 0:
                return limit
            new = math.sqrt(lo * limit) if lo > 0 else limit / 2.0
        if abs(new - t) <= 1e-13 * t:
            return new
        t = new
    return t
