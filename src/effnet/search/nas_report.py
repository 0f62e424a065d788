"""Reports of an architecture search: the best networks as stage tables like the paper's Table 1,
the chosen sampler beside random search at the same trial count, and accuracy against cost with
each strategy's Pareto front (pareto.png). No torch."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from effnet.plots import pyplot, save_figure
from effnet.spec import NetworkSpec
from effnet.textfmt import human, table

__all__ = ["nas_markdown", "pareto_front", "plot_pareto", "stage_table", "summary"]

_OPS = {"mbconv": "MBConv", "fused_mbconv": "FusedMBConv", "dwsep": "DWSep", "basic": "Basic",
        "bottleneck": "Bottleneck"}


def stage_table(spec: NetworkSpec) -> str:
    """Table 1's columns: stage, operator, input resolution, channels, layers (stem and head included)."""
    hw = spec.resolution
    rows = [["1", f"Conv{spec.stem.kernel_size}x{spec.stem.kernel_size}", f"{hw}x{hw}",
             str(spec.stem.out_channels), "1"]]
    hw = math.ceil(hw / spec.stem.stride) // (2 if spec.stem.pool else 1)
    for i, s in enumerate(spec.stages, start=2):
        op = f"{_OPS[s.block]}{s.expand_ratio:g}, k{s.kernel_size}x{s.kernel_size}" + (", SE" if s.se_ratio else "")
        rows.append([str(i), op, f"{hw}x{hw}", str(s.out_channels), str(s.repeats)])
        hw = math.ceil(hw / s.stride)
    head = spec.head.channels
    rows.append([str(len(spec.stages) + 2), ("Conv1x1 & " if head else "") + "Pooling & FC", f"{hw}x{hw}",
                 str(head or spec.stages[-1].out_channels), "1"])
    return table(["stage", "operator", "resolution", "channels", "layers"], rows, markdown=True)


def _done(collected: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for r in collected["trials"] if r["state"] == "COMPLETE" and r["accuracy"] is not None]


def summary(collected: Mapping[str, Any], base_macs: float) -> dict[str, Any]:
    """Best reward, best accuracy, best accuracy at no more than the base's MACs, trials completed and
    failed, and the summed training seconds."""
    done = _done(collected)
    cheap = [r["accuracy"] for r in done if r["macs"] <= base_macs]
    return {"strategy": collected["settings"]["strategy"], "completed": len(done),
            "failed": collected["counts"]["FAIL"],
            "best_reward": max((r["reward"] for r in done), default=None),
            "best_accuracy": max((r["accuracy"] for r in done), default=None),
            "best_accuracy_at_base_macs": max(cheap, default=None),
            "train_seconds": round(sum(r["seconds"] or 0 for r in done), 1)}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other point beats on both (lower cost, higher accuracy), by cost."""
    front: list[tuple[float, float]] = []
    for c, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or a > front[-1][1]:
            front.append((c, a))
    return front


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def nas_markdown(main: Mapping[str, Any], rand: Mapping[str, Any] | None, base: NetworkSpec,
                 base_cost: Mapping[str, float], *, top: int = 3) -> str:
    """nas.md: settings, the strategy-vs-random summary, and the best ``top`` networks as stage tables
    beside the base's."""
    s, ctx = main["settings"], main["context"]
    obj, b = s["objective"], ctx["budget"]
    lines = [f"# Architecture search `{main['study']}`", "",
             f"Objective `{obj['cost']}` ({obj['form']}, T = {human(obj['target'])}, w = {obj['w']:g}); "
             f"{s['trials']} trials per strategy, sampler seed {s['seed']}; data {ctx['data']}: "
             f"{b['train_images']} training images, {b['eval_images']} held-out training images for selection, "
             f"{b['epochs']:g} epochs, {base.resolution} px. Base {base.name}: {human(base_cost['macs'])} MACs"
             + (f", {base_cost['latency']:.2f} ms" if "latency" in base_cost else "") + ".", ""]
    rows = [summary(c, base_cost["macs"]) for c in (main, rand) if c is not None]
    lines += [table(["strategy", "completed", "failed", "best reward", "best acc %", "best acc % at <= base MACs",
                     "train s"],
                    [[r["strategy"], r["completed"], r["failed"], _fmt(r["best_reward"]), _fmt(r["best_accuracy"]),
                      _fmt(r["best_accuracy_at_base_macs"]), r["train_seconds"]] for r in rows], markdown=True), "",
              "![accuracy against cost, each strategy and its Pareto front](pareto.png)", ""]
    for i, r in enumerate(_done(main)[:top], start=1):
        spec = NetworkSpec.from_dict(r["spec"])
        lat = f", {r['latency_ms']:.2f} ms" if r.get("latency_ms") is not None else ""
        lines += [f"## {i}. {spec.name}: reward {r['reward']:.2f}, accuracy {r['accuracy']:.2f} %, "
                  f"{human(r['macs'])} MACs{lat}, {human(r['params'])} params", "", stage_table(spec), ""]
    lines += [f"## Base: {base.name}", "", stage_table(base), ""]
    return "\n".join(lines)


def _panel(ax: Any, runs: Sequence[tuple[str, Mapping[str, Any], str]], key: str, base: float | None,
           label: str) -> None:
    for name, c, colour in runs:
        pts = [(float(r[key]), float(r["accuracy"])) for r in _done(c) if r.get(key) is not None]
        if not pts:
            continue
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=colour, alpha=0.6, edgecolors="k", label=name)
        front = pareto_front(pts)
        front.append((max(p[0] for p in pts), front[-1][1]))  # hold the best accuracy out to the largest cost
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", c=colour, lw=1.5)
    if base is not None:
        ax.axvline(base, c="grey", ls="--", lw=1, label="base")
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("held-out accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_pareto(main: Mapping[str, Any], rand: Mapping[str, Any] | None, base_cost: Mapping[str, float],
                path: str | Path) -> Path:
    """Accuracy against MACs (and against latency when measured): every completed trial of the chosen
    strategy and of random search, each strategy's Pareto front as a step line, the base's cost dashed."""
    plt = pyplot()
    runs = [(f"{main['settings']['strategy']} ({main['study']})", main, "tab:blue")]
    if rand is not None:
        runs.append((f"random ({rand['study']})", rand, "tab:orange"))
    has_lat = any(r.get("latency_ms") is not None for _, c, _ in runs for r in c["trials"])
    fig, axes = plt.subplots(1, 2 if has_lat else 1, figsize=(11 if has_lat else 6.5, 4.5), squeeze=False)
    _panel(axes[0][0], runs, "macs", base_cost.get("macs"), "MACs (log)")
    if has_lat:
        _panel(axes[0][1], runs, "latency_ms", base_cost.get("latency"), "measured latency, ms (log)")
    fig.suptitle(f"architecture search: {main['settings']['trials']} trials per strategy")
    return save_figure(fig, path)
