"""PNG plots of scaling reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.scaling_law import ScalingRow


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: every effnet plot is a PNG file, and a server or CI
    machine has no display. Imported on first use, so commands that draw nothing stay fast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """Lay out, write and close ``fig`` (an open figure keeps its memory until closed)."""
    out = Path(path)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    pyplot().close(fig)
    return out


def plot_scaling(rows: Sequence[ScalingRow], path: str | Path, *, title: str = "") -> Path:
    """Two panels against φ: MACs growth measured vs (α·β²·γ²)^φ (log scale), and parameters."""
    plt = pyplot()
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise EffnetError(f"plot file {str(out)!r} must end in .png")
    if not out.parent.exists():
        raise EffnetError(f"directory {str(out.parent)!r} does not exist; create it or choose another path")
    phis = [r.phi if r.phi is not None else i for i, r in enumerate(rows)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.semilogy(phis, [r.macs_ratio for r in rows], "o-", label="measured (official rounding)")
    ax1.semilogy(phis, [r.theory_ratio for r in rows], "--", label=r"theory $(\alpha\beta^2\gamma^2)^\phi$")
    ax1.set_xlabel(r"$\phi$")
    ax1.set_ylabel("MACs / baseline MACs")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()
    ax2.semilogy(phis, [r.params / 1e6 for r in rows], "s-", color="tab:green")
    ax2.set_xlabel(r"$\phi$")
    ax2.set_ylabel("parameters (M)")
    ax2.grid(True, which="both", alpha=0.3)
    for r, x in zip(rows, phis, strict=True):
        ax2.annotate(f"{r.resolution}px", (x, r.params / 1e6), fontsize=7, xytext=(3, -10),
                     textcoords="offset points")
    fig.suptitle(title)
    return save_figure(fig, out)
