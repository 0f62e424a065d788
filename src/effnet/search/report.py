"""Tables and plots of a grid-search result (STEP 1): the ranking, accuracy over the candidate grid,
and accuracy against measured MACs (what the constraint α·β²·γ² ≈ 2 meant to hold fixed)."""

from __future__ import annotations

from pathlib import Path

from effnet.plots import pyplot, save_figure
from effnet.search.grid import SearchResult, TrialRecord
from effnet.textfmt import table

__all__ = ["plot_search", "search_rows", "search_table"]

HEADERS = ["rank", "alpha", "beta", "gamma", "a*b^2*g^2", "MACs x", "accuracy", "state", "s", "note"]


def _ratio(r: TrialRecord) -> float | None:
    return r.metrics.get("macs_ratio", r.candidate.macs_ratio)


def search_rows(result: SearchResult) -> list[list[str]]:
    rows = []
    for i, r in enumerate(result.records, start=1):
        ratio, secs = _ratio(r), r.metrics.get("seconds")
        note = (r.error or "")[:60] + (f" (attempt {r.attempts})" if r.attempts > 1 else "")
        rows.append([str(i) if r.state == "COMPLETE" else "-", f"{r.candidate.alpha:g}", f"{r.candidate.beta:g}",
                     f"{r.candidate.gamma:g}", f"{r.candidate.flops_base:.3f}",
                     "" if ratio is None else f"{ratio:.2f}", "" if r.accuracy is None else f"{r.accuracy:.2f}",
                     r.state, "" if secs is None else f"{secs:.0f}", note.strip()])
    return rows


def search_table(result: SearchResult) -> str:
    """The ranked candidates as a text table (also valid Markdown)."""
    return table(HEADERS, search_rows(result))


def plot_search(result: SearchResult, path: str | Path) -> Path:
    """Two panels: accuracy over the grid (β across, γ up, α as the label, colour = accuracy), and
    accuracy against the measured MACs ratio of each φ = 1 network to the baseline."""
    plt = pyplot()

    done = result.completed
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    if done:
        acc = [r.accuracy for r in done]
        sc = ax1.scatter([r.candidate.beta for r in done], [r.candidate.gamma for r in done], c=acc, cmap="viridis",
                         s=[60 + 160 * (r.candidate.alpha - 1) for r in done], edgecolors="k")
        fig.colorbar(sc, ax=ax1, label="accuracy (%)")
        for r in done:
            ax1.annotate(f"α{r.candidate.alpha:g}\n{r.accuracy:.1f}", (r.candidate.beta, r.candidate.gamma),
                         fontsize=7, xytext=(5, 3), textcoords="offset points")
        best = result.best
        ax1.scatter([best.candidate.beta], [best.candidate.gamma], marker="*", s=300, c="red", label="best")
        ax1.legend(loc="upper right", fontsize=8)
        ratios = [_ratio(r) or r.candidate.flops_base for r in done]
        ax2.scatter(ratios, acc, c="tab:blue", edgecolors="k")
        for r, x in zip(done, ratios, strict=True):
            ax2.annotate(f"({r.candidate.alpha:g},{r.candidate.beta:g},{r.candidate.gamma:g})", (x, r.accuracy),
                         fontsize=6, xytext=(3, 3), textcoords="offset points")
    failed = [r for r in result.records if r.state == "FAIL"]
    if failed:
        ax1.scatter([r.candidate.beta for r in failed], [r.candidate.gamma for r in failed], marker="x", c="red",
                    label="failed")
    ax1.set_xlabel("β (width base)")
    ax1.set_ylabel("γ (resolution base)")
    ax1.set_title("accuracy over the (α, β, γ) grid (marker size: α)")
    ax1.grid(alpha=0.3)
    ax2.axvline(result.grid.target, color="gray", ls="--", lw=1, label=f"target {result.grid.target:g}")
    ax2.set_xlabel("measured MACs of the φ = 1 network / baseline MACs")
    ax2.set_ylabel("accuracy (%)")
    ax2.set_title("accuracy vs MACs (STEP 1 candidates)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    return save_figure(fig, path)
