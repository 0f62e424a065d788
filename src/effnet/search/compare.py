"""Single-dimension vs compound scaling at matched MACs (the paper's Table 3 and Fig. 8 in miniature).

The paper's claim (§3.2, §5.1): for the same FLOPs, scaling depth, width *and* resolution together
beats scaling any one of them ("up to 2.5 %", Fig. 8). The test is only fair at matched cost, so
each single-dimension multiplier is *solved* so that the measured MACs of the rounded network match
those of the compound-scaled one (ceil on repeats and channels to 8 make the cost a step function
of the multiplier, so the closest step is taken and its distance reported). All methods are
trained identically over several seeds; the table gives mean ± std, and the winner is whatever the
numbers say.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.macs import estimate_cost
from effnet.plots import pyplot, save_figure
from effnet.scaling import Coefficients, Multipliers, compound_multipliers, round_resolution, scale_spec
from effnet.spec import NetworkSpec
from effnet.textfmt import human, table

__all__ = ["METHODS", "MIN_PHI_PCT", "Arm", "budget_statement", "candidates_of", "choose_phi", "match_compound",
           "match_single", "plan_arms", "plot_compare", "summarize", "summary_table"]

METHODS = ("baseline", "depth", "width", "resolution", "compound")


def _macs(spec: NetworkSpec) -> int:
    return estimate_cost(spec, num_classes=10, in_chans=1).macs


MIN_PHI_PCT = 50
"""The smallest φ (in hundredths) a compound arm is matched at: see :func:`match_compound`."""


def candidates_of(base: NetworkSpec, dim: str, max_mult: float) -> list[float]:
    """Multipliers at which the rounded network can change: every whole pixel count (resolution),
    every k / repeats (depth by ceil; (k + ½) / repeats by round), a 0.01 grid (width: channels round to 8)."""
    if dim == "resolution":
        top = round_resolution(base.resolution, max_mult)
        return [px / base.resolution for px in range(base.resolution, top + 1)]
    if dim == "depth":  # ceil steps at k / L, round steps at (k + 0.5) / L
        half = 0.5 if base.depth_rounding == "round" else 0.0
        steps = {(k + half) / s.repeats for s in base.stages if s.scale_depth
                 for k in range(s.repeats, int(s.repeats * max_mult) + 1)}
        return sorted(steps | {1.0})
    return [1 + k / 100 for k in range(int((max_mult - 1) * 100) + 1)]


def match_single(base: NetworkSpec, target_macs: int, dim: str, *, max_mult: float = 8.0) -> Multipliers:
    """The multiplier on ``dim`` alone (depth, width or resolution) whose rounded network's measured
    MACs are closest to ``target_macs`` (the smallest such multiplier on ties)."""
    if dim not in ("depth", "width", "resolution"):
        raise EffnetError(f"dimension {dim!r}: use depth, width or resolution")
    best, best_err = Multipliers(), float("inf")
    for m in candidates_of(base, dim, max_mult):
        mult = Multipliers(**{dim: m})
        err = abs(_macs(scale_spec(base, mult)) / target_macs - 1)
        if err < best_err - 1e-12:
            best, best_err = mult, err
    return best


@dataclass(frozen=True)
class Arm:
    """One scaling method at one budget: its multipliers, rounded spec and measured cost."""

    method: str
    phi: float
    multipliers: Multipliers
    spec: NetworkSpec
    macs: int
    macs_ratio: float  # to the baseline
    match_error: float  # |MACs / compound MACs − 1|

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "phi": self.phi, "multipliers": asdict(self.multipliers), "macs": self.macs,
                "macs_ratio": self.macs_ratio, "match_error": self.match_error, "resolution": self.spec.resolution,
                "blocks": self.spec.num_blocks, "widths": [s.out_channels for s in self.spec.stages]}


def match_compound(base: NetworkSpec, target_macs: int, coeffs: Coefficients, *, min_phi: float = MIN_PHI_PCT / 100,
                   max_phi: float = 4.0) -> float:
    """The φ in [``min_phi``, ``max_phi``] (step 0.01) at which ``coeffs`` scale ``base`` to the MACs
    closest to ``target_macs``. The floor keeps it a compound network: at φ → 0 ceil on repeats still
    doubles every one-block stage while width and resolution barely move, a depth-only net in disguise."""
    phis = [k / 100 for k in range(int(min_phi * 100), int(max_phi * 100) + 1)]
    return min(phis, key=lambda p: abs(_macs(scale_spec(base, compound_multipliers(p, coeffs))) / target_macs - 1))


def plan_arms(base: NetworkSpec, coeffs: Coefficients, phi: float = 1.0,
              reference: Coefficients | None = None) -> list[Arm]:
    """Baseline, depth-, width-, resolution-only and compound (α^φ, β^φ, γ^φ) at compound's measured MACs.

    ``reference`` adds a "compound-ref" arm: other coefficients (the paper's 1.2, 1.1, 1.15) at the
    φ that matches the same MACs, so a search that picked a single dimension still meets a true
    three-dimensional compound network."""
    base_macs = _macs(base)
    comp_m = compound_multipliers(phi, coeffs)
    target = _macs(scale_spec(base, comp_m))
    fixed = {"baseline": (Multipliers(), 0.0), "compound": (comp_m, phi)}
    methods = list(METHODS)
    if reference is not None:
        ref_phi = match_compound(base, target, reference)
        fixed["compound-ref"] = (compound_multipliers(ref_phi, reference), ref_phi)
        methods.append("compound-ref")
    arms = []
    for method in methods:
        m, arm_phi = fixed.get(method) or (match_single(base, target, method), phi)
        spec = scale_spec(base, m, name=f"{base.name}:{method}@phi={arm_phi:g}")
        macs = _macs(spec)
        arms.append(Arm(method, arm_phi, m, spec, macs, macs / base_macs,
                        0.0 if method == "baseline" else abs(macs / target - 1)))
    return arms


def choose_phi(base: NetworkSpec, coeffs: Coefficients, near: float = 1.0, *, tol: float = 0.08,
               reference: Coefficients | None = None) -> float:
    """The φ closest to ``near`` (±0.5, step 0.05) at which every single-dimension arm (and the
    ``reference`` compound arm, if any) can match the compound MACs within ``tol``; else the φ with
    the smallest worst mismatch. Rounding makes each dimension's cost a step function (ceil on
    repeats, channels to 8, feature maps ceil(H/stride)), so not every budget is reachable by all at once."""
    phis = sorted((round(near + k / 20, 2) for k in range(-10, 11) if near + k / 20 > 0), key=lambda p: abs(p - near))
    worst = {}
    for phi in phis:
        worst[phi] = max(a.match_error for a in plan_arms(base, coeffs, phi, reference))
        if worst[phi] <= tol:
            return phi
    return min(worst, key=lambda p: (worst[p], abs(p - near)))


def summarize(arms: Sequence[Arm], outcomes: Mapping[str, Sequence[float]]) -> list[dict[str, Any]]:
    """Mean ± sample std of accuracy per arm (``outcomes[method]`` = accuracies over seeds)."""
    rows = []
    for arm in arms:
        acc = list(outcomes[arm.method])
        rows.append(arm.to_dict() | {"seeds": len(acc), "accuracies": acc, "mean": statistics.fmean(acc),
                                     "std": statistics.stdev(acc) if len(acc) > 1 else 0.0})
    return rows


def winner(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The best scaled method by mean accuracy, and whether its lead over the runner-up exceeds the
    larger of the two standard deviations (otherwise the experiment cannot separate them)."""
    scaled = sorted((r for r in rows if r["method"] != "baseline"), key=lambda r: -r["mean"])
    first, second = scaled[0], scaled[1]
    lead = first["mean"] - second["mean"]
    return {"method": first["method"], "runner_up": second["method"], "lead": lead,
            "separated": lead > max(first["std"], second["std"])}


def budget_statement(b: Mapping[str, Any]) -> str:
    """The sentence every comparison report states (``b``: a ``Budget.to_dict()``): the budget its
    conclusions are about. The paper trains every network to convergence (§5); a fixed small budget
    favours the networks that learn fastest, so a ranking holds for that budget only (docs/sweep.md)."""
    return (f"Budget: {b['train_images']:,} training images × {b['epochs']:g} epochs = "
            f"{b['train_images'] * b['epochs']:,.0f} image-epochs per network, batch {b['batch_size']}; the "
            "conclusions are about this budget, not about training to convergence.")


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    return table(["method", "d", "w", "r", "res", "blocks", "MACs", "MACs x", "vs compound", "seeds",
                  "top-1 mean ± std"],
                 [[r["method"], f"{r['multipliers']['depth']:.3g}", f"{r['multipliers']['width']:.3g}",
                   f"{r['multipliers']['resolution']:.3g}", r["resolution"], r["blocks"], human(r["macs"]),
                   f"{r['macs_ratio']:.2f}", "" if r["method"] == "baseline" else f"{100 * r['match_error']:.1f}%",
                   r["seeds"], f"{r['mean']:.2f} ± {r['std']:.2f}"] for r in rows])


def plot_compare(rows: Sequence[Mapping[str, Any]], path: str | Path, *, family: Sequence[Mapping[str, Any]] = (),
                 title: str = "") -> Path:
    """Accuracy vs MACs: each method's mean ± std (Fig. 8), and the compound family of STEP 2 as a line."""
    plt = pyplot()

    colors = {"baseline": "black", "depth": "tab:orange", "width": "tab:green", "resolution": "tab:purple",
              "compound": "tab:red", "compound-ref": "tab:brown"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if family:
        ax.plot([f["macs"] / 1e6 for f in family], [f["accuracy"] for f in family], "--", color="tab:red", alpha=0.5,
                label="compound family (STEP 2, φ = " + ", ".join(f"{f['phi']:g}" for f in family) + ")")
    for i, r in enumerate(rows):  # a small sideways offset keeps arms of equal cost apart
        ax.errorbar([r["macs"] / 1e6 * (1 + 0.012 * (i - len(rows) / 2))], [r["mean"]], yerr=[r["std"]], fmt="o",
                    capsize=4, ms=8,
                    color=colors.get(r["method"], "gray"), label=f"{r['method']} ({r['mean']:.2f} ± {r['std']:.2f})")
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title or "single-dimension vs compound scaling at matched MACs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def cam_grid(models: Mapping[str, Any], images: Any, labels: Sequence[int], classes: Sequence[str],
             path: str | Path, *, load: Callable[[Any], Any] | None = None) -> Path:
    """Class activation maps (Zhou et al. 2016) of each method's model on the same test images, side by
    side (the paper's Fig. 7): one row per image, the image then one column per method.

    ``models`` maps method → trained ConvNet (1-channel input); ``images`` is uint8 (N, H, W).
    """
    plt = pyplot()
    from PIL import Image

    from effnet.cam import compute_cam, overlay
    from effnet.train.budget import resize_images

    n, names = len(images), list(models)
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(1.9 * (len(names) + 1), 2.0 * n), squeeze=False)
    for i in range(n):
        big = Image.fromarray(images[i]).resize((112, 112), Image.BICUBIC)
        axes[i][0].imshow(big, cmap="gray")
        axes[i][0].set_title(f"true: {classes[labels[i]]}", fontsize=7)
        for j, name in enumerate(names, start=1):
            model = models[name]
            x = resize_images(images[i:i + 1], model.spec.resolution)[0]
            res = compute_cam(model, x)
            axes[i][j].imshow(overlay(big, res.heatmap.numpy(), alpha=0.45))
            ok = "✓" if res.class_idx == labels[i] else "✗"
            axes[i][j].set_title(f"{name}\n{ok} {classes[res.class_idx][:11]} {100 * res.probability:.0f}%",
                                 fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    return save_figure(fig, path, dpi=100)
