"""Report figures (matplotlib, Agg backend): performance and recall against density, layer-wise density,
ticket recall during training (the during-training protocols), and drawings of the tickets. Each function returns a matplotlib Figure; the caller saves it."""
from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from .data import (ORACLE_MASK, ORACLE_TRAINED, PLANTED, Setting, curves, is_during,  # noqa: E402
                   layer_columns, oracle_rows, performance_column, planted_ticket, protocols_in,
                   requested_densities, requested_order, training_curves)
from .verdicts import CONFIDENCE, t_interval  # noqa: E402

TICKET_COLOR = "black"
DENSE_COLOR = "0.45"
_PALETTE = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("Dark2").colors)
X_LABEL = "density (kept weights + biases, log)"
CI_TEXT = f"{CONFIDENCE:.0%} Student t confidence interval over seeds"


def colors_for(labels) -> dict[str, tuple]:
    """A fixed colour per pruner label, the same in every figure; the ticket oracle is black."""
    out, i = {}, 0
    for label in sorted(set(labels)):
        if label in (ORACLE_TRAINED, ORACLE_MASK):
            out[label] = TICKET_COLOR
        else:
            out[label] = _PALETTE[i % len(_PALETTE)]
            i += 1
    return out


def _new(n_panels: int, width: float = 4.8, height: float = 3.5, nrows: int = 1) -> tuple[Figure, np.ndarray]:
    ncols = max(1, math.ceil(n_panels / nrows))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             constrained_layout=True)
    return fig, axes


def _log(axis) -> None:
    """Log axis with decade labels only: labelling minor ticks costs most of a figure's drawing time."""
    axis.set_major_locator(LogLocator(base=10, numticks=12))
    axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0), numticks=12))
    axis.set_minor_formatter(NullFormatter())


def _style_x(ax, xs, tried=(), marks=()) -> None:
    """Log density axis over the points ``xs``, labelled at the densities ``tried``, every decade and the
    ``marks`` (the planted ticket's density), in that order of priority where labels would collide."""
    ax.set_xscale("log")
    _log(ax.xaxis)
    ax.set_xlabel(X_LABEL)
    ax.grid(True, which="major", alpha=0.3)
    xs = [x for x in xs if x and x > 0]
    if xs:
        lo, hi = min(xs), max(xs)
        ax.set_xlim(lo / 1.6, min(hi * 1.6, 1.6))
        ax.xaxis.set_major_locator(FixedLocator(_density_ticks(ax, tried, marks)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _tick(v)))


def _density_ticks(ax, tried, marks) -> list[float]:
    """Tick positions: each of ``tried``, the decades and ``marks`` whose label keeps clear of those before."""
    lo, hi = ax.get_xlim()
    width = ax.get_position().width * ax.figure.get_figwidth() * 0.8  # inches, less what the layout takes
    per_decade = width / math.log10(hi / lo)
    char = 0.6 * plt.rcParams["font.size"] / 72  # inches per character of a tick label, about
    decades = [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    ticks: list[float] = []
    for v in [*tried, *decades, *marks]:
        if not (v and lo <= v <= hi):
            continue
        if all(abs(math.log10(v / t)) * per_decade >= char * (len(_tick(v)) + len(_tick(t))) / 2 + 0.1
               for t in ticks):
            ticks.append(float(v))
    return sorted(ticks)


def _tick(v: float) -> str:
    return f"{v:.2g}"


def performance_figure(setting: Setting, colors: dict) -> Figure | None:
    """Test performance against density, one panel per protocol: per pruner the mean over seeds with a band
    for its 95% Student t confidence interval (losses: geometric mean, interval of the log values); the ticket
    oracle run under the panel's protocol (every verdict's reference) as a black diamond with its interval and
    a dotted line; the untrained planted ticket as a star at its density; the dense network as a dashed line."""
    frame = setting.frame
    metric, ticket_metric, dense_metric, ylabel = performance_column(frame)
    regression = metric == "test_loss"
    table = curves(frame, metric, log=regression)
    if table.empty:
        return None
    protocols = protocols_in(frame)
    fig, axes = _new(len(protocols))
    t_density, t_perf = planted_ticket(frame, ticket_metric)
    tried = requested_densities(frame)
    for ax, protocol in zip(axes.flat, protocols):
        pframe = frame[frame["protocol"] == protocol]
        ref = oracle_rows(pframe.dropna(subset=[metric]))
        ref_label = ref["label"].iloc[0] if len(ref) else None
        sub = table[table["protocol"] == protocol]
        xs = list(sub["x"])
        for label, c in sub.groupby("label", sort=True):
            if label != ref_label:
                _mean_and_interval(ax, c.sort_values("x"), label, colors.get(label), regression)
        if len(ref):
            mean, lo, hi, _ = t_interval(ref[metric], log=regression)
            x = float(ref["x"].mean())
            ax.errorbar([x], [mean], yerr=[[mean - lo], [hi - mean]], marker="D", ms=6, color=TICKET_COLOR,
                        mfc="white", mew=1.5, capsize=3, ls="none", zorder=7,
                        label=f"{ref_label}: reference (oracle, this protocol)")
            ax.axhline(mean, color=TICKET_COLOR, ls=":", lw=1.0)
            xs.append(x)
        if dense_metric in pframe and pframe[dense_metric].notna().any():
            ax.axhline(float(pframe[dense_metric].mean()), color=DENSE_COLOR, ls="--", lw=1.2,
                       label="dense network")
        if t_density and t_perf is not None:
            ax.plot([t_density], [t_perf], marker="*", ms=15, color="gold", mec="black", mew=1.0, ls="none",
                    label=PLANTED, zorder=4)
            xs.append(t_density)
        _style_x(ax, xs, tried, [t_density] if t_density else [])
        if regression:
            ax.set_yscale("log")
            _log(ax.yaxis)
        else:
            ax.set_ylim(0.0, 1.02)
        ax.set_ylabel(f"{ylabel}, {'geometric mean' if regression else 'mean'}")
        ax.set_title(setting.panel_title(protocol), fontsize=10)
    for ax in list(axes.flat)[len(protocols):]:
        ax.axis("off")
    axes.flat[0].fill_between([], [], [], color="0.5", alpha=0.25, lw=0, label=f"band: {CI_TEXT}")
    _legend(fig, axes)
    _suptitle(fig, f"{setting.title}: {ylabel}, mean over seeds with its {CI_TEXT.replace(' over seeds', '')}")
    return fig


def _mean_and_interval(ax, c, label: str, color, positive: bool) -> None:
    """One pruner's curve: the mean with a band for its confidence interval (error bars at a lone density)."""
    lo, hi = c["ci_lo"], c["ci_hi"]
    if positive:
        lo = lo.clip(lower=1e-300)
    if len(c) == 1:
        m = c["mean"].to_numpy()
        ax.errorbar(c["x"], m, yerr=[m - lo.to_numpy(), hi.to_numpy() - m], marker="o", ms=4, color=color,
                    capsize=3, ls="none", label=label)
        return
    ax.plot(c["x"], c["mean"], label=label, color=color, lw=1.8, marker="o", ms=3.5)
    ax.fill_between(c["x"], lo, hi, color=color, alpha=0.15, lw=0)


def _wrap(text: str, width: int) -> str:
    """Break ``text`` into lines of about ``width`` characters after spaces or commas (pruner options)."""
    lines, line = [], ""
    for part in re.split(r"(?<=[ ,])", text):
        if line and len(line) + len(part.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += part
    return "\n".join(lines + [line.rstrip()])


def _legend(fig: Figure, axes) -> None:
    """One legend for every panel, right of them; the figure grows by the legend's size, so that long labels
    (pruner options) never squeeze the panels (constrained_layout gives up when they collapse)."""
    handles, labels = {}, []
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in handles:
                handles[l] = h
                labels.append(l)
    if not handles:
        return
    legend = fig.legend([handles[l] for l in labels], [_wrap(l, 34) for l in labels], loc="outside right center",
                        fontsize=8, frameon=False)
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    columns = max(1, math.ceil(box.height / fig.dpi / (0.92 * fig.get_figheight())))
    if columns > 1:
        legend.set_ncols(columns)
        box = legend.get_window_extent(renderer)
    fig.set_figwidth(fig.get_figwidth() + box.width / fig.dpi + 0.15)


def _suptitle(fig: Figure, text: str, fontsize: float = 11) -> None:
    """The figure's title, in lines that fit its width."""
    fig.suptitle(_wrap(text, max(30, int(fig.get_figwidth() * 72 / (0.6 * fontsize)))), fontsize=fontsize)


def recall_figure(setting: Setting, colors: dict) -> Figure | None:
    """Ticket recall against density, per protocol: positional recall (fraction of the planted ticket's
    parameters kept; solid, with a band for its 95% Student t confidence interval over seeds) and, where the
    results have it, functional recall (fraction of ticket neurons the found network computes up to a
    positive factor; dashed, same colour). The dotted diagonal is what a random mask keeps on average."""
    frame = setting.frame
    table = curves(frame, "recall")
    if table.empty:
        return None
    functional = curves(frame, "functional_recall")
    protocols = protocols_in(frame)
    tried = requested_densities(frame)
    fig, axes = _new(len(protocols))
    for ax, protocol in zip(axes.flat, protocols):
        sub = table[table["protocol"] == protocol]
        for label, c in sub.groupby("label", sort=True):
            c = c.sort_values("x")
            ax.plot(c["x"], c["mean"], label=label, color=colors.get(label), marker="o", ms=3.5, lw=1.6)
            ax.fill_between(c["x"], c["ci_lo"].clip(0), c["ci_hi"].clip(upper=1),
                            color=colors.get(label), alpha=0.15, lw=0)
        if not functional.empty:
            for label, c in functional[functional["protocol"] == protocol].groupby("label", sort=True):
                c = c.sort_values("x")
                ax.plot(c["x"], c["mean"], color=colors.get(label), ls="--", marker="x", ms=3.5, lw=1.2)
            ax.plot([], [], color="0.3", lw=1.6, marker="o", ms=3.5, label="positional recall (solid)")
            ax.plot([], [], color="0.3", lw=1.2, ls="--", marker="x", ms=3.5, label="functional recall (dashed)")
        xs = [x for x in sub["x"] if x > 0]
        if xs:
            grid = np.geomspace(min(xs), max(xs), 50)
            ax.plot(grid, grid, color="0.6", ls=":", lw=1, label="random expectation")
        _style_x(ax, xs, tried)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("ticket recall")
        ax.set_title(setting.panel_title(protocol), fontsize=10)
    for ax in list(axes.flat)[len(protocols):]:
        ax.axis("off")
    _legend(fig, axes)
    _suptitle(fig, f"{setting.title}: ticket recall")
    return fig


def layer_density_figure(setting: Setting, colors: dict, max_columns: int = 5) -> Figure | None:
    """Layer-wise density of the found masks (mean over seeds) beside the planted ticket's, one row per
    protocol and one column per requested density: sparsest first, the ticket's own density ("ticket") last."""
    frame = setting.frame
    found, ticket = layer_columns(frame)
    if not found:
        return None
    protocols = protocols_in(frame)
    keys = requested_order(frame["density_key"])
    # drop density 1 (every layer is full) and keep at most max_columns, sparsest first, "ticket" kept
    keys = [k for k in keys if k != "1"] or keys
    if len(keys) > max_columns:
        keys = keys[:max_columns - 1] + keys[-1:] if keys[-1] == "ticket" else keys[:max_columns]
    fig, axes = plt.subplots(len(protocols), len(keys), figsize=(3.3 * len(keys) + 1.5, 2.9 * len(protocols)),
                             squeeze=False, constrained_layout=True, sharey=True)
    layers = np.arange(1, len(found) + 1)
    t_profile = None
    if ticket:
        t_profile = frame[ticket].mean().to_numpy(dtype=float)
    for r, protocol in enumerate(protocols):
        pframe = frame[frame["protocol"] == protocol]
        for c, key in enumerate(keys):
            ax = axes[r, c]
            sub = pframe[pframe["density_key"] == key]
            for label, g in sub.groupby("label", sort=True):
                prof = g[found].mean().to_numpy(dtype=float)
                ax.plot(layers, np.where(prof > 0, prof, np.nan), marker="o", ms=3, color=colors.get(label),
                        label=label, lw=1.4)
                dead = layers[prof <= 0]
                if len(dead):
                    ax.plot(dead, np.full(len(dead), 1e-5), marker="v", ls="none", color=colors.get(label), ms=6)
            if t_profile is not None:
                tl = np.arange(1, len(t_profile) + 1)
                ax.plot(tl, t_profile, color="black", lw=2.2, ls="--", marker="s", ms=4, label=PLANTED)
            ax.set_yscale("log")
            _log(ax.yaxis)
            ax.set_xticks(layers)
            title = "density ticket" if key == "ticket" else f"density {key}"
            ax.set_title(f"{protocol}, {title}", fontsize=9)
            if c == 0:
                ax.set_ylabel("layer density")
            if r == len(protocols) - 1:
                ax.set_xlabel("layer")
            ax.grid(True, alpha=0.3)
    _legend(fig, axes)
    _suptitle(fig, f"{setting.title}: layer-wise density (▼ = empty layer)")
    return fig


_METHOD_PALETTE = list(plt.get_cmap("Dark2").colors)
_PRUNER_STYLES = ("-", "--", ":", "-.")
CURVE_BAND_TEXT = "min-max over seeds"


def training_curves_figure(setting: Setting, colors: dict) -> Figure | None:
    """Ticket recall against the optimiser step for the during-training runs (`plantseek.during_training`),
    one row of panels per requested density (sparsest first): positional recall on the left and, where the
    runs have it, functional recall on the right. One line per method (gradual, SET, RigL: `protocol_label`),
    with the pruner in the label when several ran (then a line style per pruner), the mean over seeds with a
    band from the smallest to the largest seed; each value holds from one mask update to the next. The dotted
    line is a random mask's expected recall (its density); the planted ticket's density is in the title.
    None without during-training runs that recorded curves."""
    frame = setting.frame
    during = frame[is_during(frame)]
    if during.empty:
        return None
    recall = training_curves(during, "recall_curve")
    if recall.empty:
        return None
    functional = training_curves(during, "functional_recall_curve")
    functional = functional[functional["mean"].map(lambda m: bool(np.isfinite(m).any()))]
    panels = [("recall", recall, "ticket recall")]
    if not functional.empty:
        panels.append(("functional recall", functional, "functional recall"))
    keys = [k for k in requested_order(recall["density_key"])]
    protocols = protocols_in(recall)
    pruners = sorted(dict.fromkeys(recall["label"]))
    several = len(pruners) > 1
    color = {p: _METHOD_PALETTE[i % len(_METHOD_PALETTE)] for i, p in enumerate(protocols)}
    style = {l: _PRUNER_STYLES[i % len(_PRUNER_STYLES)] for i, l in enumerate(pruners)}
    t_density, _ = planted_ticket(during, "")
    fig, axes = plt.subplots(len(keys), len(panels), figsize=(5.2 * len(panels), 3.3 * len(keys)), squeeze=False,
                             constrained_layout=True, sharex=True)
    for r, key in enumerate(keys):
        kept = float(recall.loc[recall["density_key"] == key, "x"].mean())
        for c, (name, table, ylabel) in enumerate(panels):
            ax = axes[r, c]
            sub = table[table["density_key"] == key]
            for protocol in protocols:
                for label in pruners:
                    rows = sub[(sub["protocol"] == protocol) & (sub["label"] == label)]
                    if rows.empty:
                        continue
                    row = rows.iloc[0]
                    text = f"{protocol}, {label}" if several else protocol
                    ax.step(row["steps"], row["mean"], where="post", color=color[protocol], ls=style[label],
                            lw=1.7, marker="o", ms=3, label=f"{text} ({row['n']} seeds)")
                    ax.fill_between(row["steps"], row["lo"], row["hi"], step="post", color=color[protocol],
                                    alpha=0.15, lw=0)
            if name == "recall" and math.isfinite(kept):
                ax.axhline(kept, color="0.6", ls=":", lw=1, label="random expectation (the density)")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(True, alpha=0.3)
            ax.set_ylabel(ylabel)
            density = "density ticket" if key == "ticket" else f"density {key}"
            ax.set_title(f"{name}, {density} (kept {kept:.3g})", fontsize=9)
            if r == len(keys) - 1:
                ax.set_xlabel("optimiser step")
    axes[0, 0].fill_between([], [], [], color="0.5", alpha=0.25, lw=0, label=f"band: {CURVE_BAND_TEXT}")
    _legend(fig, axes)
    ticket = f" (planted ticket's density {t_density:.3g})" if t_density else ""
    _suptitle(fig, f"{setting.title}: ticket recall during training{ticket}, mean over seeds")
    return fig


def ticket_figure(ticket, title: str) -> Figure:
    """Draw a ticket as in the paper's figure 2: neurons in columns, one line per nonzero weight, line width
    by |weight| (relative to the largest), red positive and blue negative; node fill shows the bias sign."""
    weights = [np.asarray(w, dtype=float) for w in ticket.weights]
    biases = [np.asarray(b, dtype=float) for b in ticket.biases]
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    n_layers = len(sizes)
    tallest = max(sizes)
    fig, ax = plt.subplots(figsize=(min(2.0 + 1.6 * n_layers, 18), min(1.5 + 0.22 * tallest, 14)),
                           constrained_layout=True)

    def ys(n: int) -> np.ndarray:
        return np.linspace(0.5, -0.5, n) * (n - 1) / max(tallest - 1, 1) if n > 1 else np.zeros(1)

    pos = [ys(n) for n in sizes]
    wmax = max((np.abs(w).max() for w in weights if w.size), default=1.0) or 1.0
    segments, widths, cols = [], [], []
    for l, w in enumerate(weights):
        rows, colsi = np.nonzero(w)
        for i, j in zip(rows, colsi):
            segments.append([(l, pos[l][j]), (l + 1, pos[l + 1][i])])
            widths.append(0.3 + 3.2 * abs(w[i, j]) / wmax)
            cols.append("#c0392b" if w[i, j] > 0 else "#2e6fd8")
    order = np.argsort(widths)  # thick lines on top
    ax.add_collection(LineCollection([segments[k] for k in order], linewidths=[widths[k] for k in order],
                                     colors=[cols[k] for k in order], alpha=0.75, zorder=1))
    node = 60 if tallest < 40 else 25
    for l, p in enumerate(pos):
        if l == 0:
            face = ["white"] * len(p)
        else:
            b = biases[l - 1]
            face = ["#f3b7b0" if v > 0 else "#b5cdf5" if v < 0 else "white" for v in b]
        ax.scatter(np.full(len(p), l), p, s=node, c=face, edgecolors="black", linewidths=0.6, zorder=2)
    ax.set_xticks(range(n_layers))
    ax.set_xticklabels(["input"] + [f"layer {i}" for i in range(1, n_layers - 1)] + ["output"])
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_xlim(-0.3, n_layers - 0.7)
    ax.set_ylim(-0.55, 0.55)
    from matplotlib.lines import Line2D

    legend = [Line2D([0], [0], color="#c0392b", lw=2.5, label="positive weight"),
              Line2D([0], [0], color="#2e6fd8", lw=2.5, label="negative weight"),
              Line2D([0], [0], marker="o", ls="none", mfc="#f3b7b0", mec="black", label="positive bias"),
              Line2D([0], [0], marker="o", ls="none", mfc="#b5cdf5", mec="black", label="negative bias")]
    # below the layer names, not over them: the layout keeps the legend outside the axes and their labels
    fig.legend(handles=legend, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    nnz = int(sum((w != 0).sum() + (b != 0).sum() for w, b in zip(weights, biases)))
    ax.set_title(_wrap(f"{title}: {len(weights)} layers, widths {'-'.join(map(str, sizes))}, {nnz} nonzero "
                       f"parameters (line width ∝ |weight|)", int(fig.get_figwidth() * 72 / 5.8)), fontsize=10)
    return fig
