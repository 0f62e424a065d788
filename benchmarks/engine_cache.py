"""What the engine cache saves: ``effnet predict`` in fresh processes, eager vs ONNX Runtime cold vs warm.

    .venv/bin/python benchmarks/engine_cache.py --files 20 --rate-files 100 --rounds 2   # docs/inference.md

Each contender is a fresh ``python -m effnet predict FILES --model efficientnet_lite0 --pretrained``
process, as a user's command would be, with its own ``EFFNET_CACHE``:

- ``eager``: ``--engine eager`` (the folded PyTorch model: nothing exported);
- ``ort cold``: ``--engine onnxruntime`` with an empty engine cache (export, session, verification);
- ``ort warm``: the same with the cache the cold run filled (session and verification only).

Per run: the engine build time the summary line reports (wall), the classification wall time after
it, and the CPU time of the whole process tree (user + system, decode workers included), which a
busy machine does not inflate as it does wall time. Contenders alternate within each round, so load
drifts hit all of them. Then, with the ``--rate-files`` runs, the file count above which ONNX Runtime
(warm cache, and cold) finishes sooner than eager, by process wall time and by CPU time (each a line
through the two run sizes). The machine line (CPU features, cores, load average) is printed before
and after.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("EFFNET_SHARED_DATA", ROOT.parent / "shared/data")) / "imagenet-sample-100"
SUMMARY = re.compile(r"(\d+) images in ([\d.]+) s .*engine built in ([\d.]+) s")


def _run(files: list[Path], engine: str, cache: Path, model: str, timeout: float) -> dict[str, float]:
    env = {**os.environ, "EFFNET_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "effnet", "predict", *map(str, files), "--model", model, "--pretrained",
           "--engine", engine, "--json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = SUMMARY.search(done.stderr)
    if done.returncode != 0 or m is None:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"images": int(m.group(1)), "classify_s": float(m.group(2)), "build_s": float(m.group(3)),
            "process_s": wall, "cpu_s": cpu}


def _round(files: list[Path], model: str, timeout: float, with_cold: bool) -> dict[str, dict[str, float]]:
    out = {}
    with tempfile.TemporaryDirectory(prefix="effnet-cache-bench-") as tmp:
        cache = Path(tmp)
        out["eager"] = _run(files, "eager", cache, model, timeout)
        if with_cold:
            out["ort cold"] = _run(files, "onnxruntime", cache, model, timeout)
        else:  # fill the cache untimed
            _run(files, "onnxruntime", cache, model, timeout)
        out["ort warm"] = _run(files, "onnxruntime", cache, model, timeout)
    return out


def _table(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    med = {k: {f: statistics.median(r[k][f] for r in rounds) for f in rounds[0][k]} for k in rounds[0]}
    print(f"{'contender':<10} {'build s':>8} {'classify s':>10} {'img/s':>7} {'process s':>9} {'CPU s':>7}"
          f"   (median of {len(rounds)} rounds; rounds: build s " + " | ".join(
              ", ".join(f"{k} {r[k]['build_s']:.1f}" for k in r) for r in rounds) + ")")
    for k, v in med.items():
        print(f"{k:<10} {v['build_s']:8.1f} {v['classify_s']:10.1f} {v['images'] / v['classify_s']:7.1f} "
              f"{v['process_s']:9.1f} {v['cpu_s']:7.1f}")
    return med


def _break_even(few: dict[str, dict[str, float]], many: dict[str, dict[str, float]]) -> None:
    """Files above which ONNX Runtime finishes first, warm cache and cold: each run's process wall time
    and CPU time as a + b·files through the two run sizes (a cold run costs what a warm one does per
    file: the same engine), then (a_ort − a_eager) / (b_eager − b_ort)."""
    span = many["eager"]["images"] - few["eager"]["images"]
    if span <= 0:
        return
    for field, what in (("process_s", "process wall"), ("cpu_s", "CPU")):
        fit = {}
        for k in ("eager", "ort warm"):
            b = (many[k][field] - few[k][field]) / span
            fit[k] = (few[k][field] - b * few[k]["images"], b)
        fit["ort cold"] = (few["ort cold"][field] - fit["ort warm"][1] * few["ort cold"]["images"], fit["ort warm"][1])
        (ae, be) = fit["eager"]
        parts = [f"eager a {ae:.1f} s b {1000 * be:.1f} ms"]
        for k in ("ort warm", "ort cold"):
            a, b = fit[k]
            even = f"break-even {max(0.0, a - ae) / (be - b):.0f} files" if b < be else "no break-even"
            parts.append(f"{k} a {a:.1f} s b {1000 * b:.1f} ms: {even}")
        print(f"{what} = a + b·files: " + "; ".join(parts))


def main() -> None:
    from effnet.deploy.machine import describe

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=20, help="files for the cold vs warm build (20)")
    p.add_argument("--rate-files", type=int, default=100, help="files for the per-image rates (100; 0: skip)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--timeout", type=float, default=600, help="seconds per process")
    args = p.parse_args()
    photos = sorted(SAMPLE.glob("*/*.JPEG"))
    if len(photos) < max(args.files, args.rate_files):
        raise SystemExit(f"{SAMPLE}: {len(photos)} photos, need {max(args.files, args.rate_files)}")
    print(f"before: {describe()}")
    print(f"\n{args.model}, {args.files} files of {SAMPLE.name}, fresh process per run:")
    few = _table([_round(photos[:args.files], args.model, args.timeout, True) for _ in range(args.rounds)])
    if args.rate_files:
        print(f"\n{args.rate_files} files (ORT cache filled untimed first):")
        med = _table([_round(photos[:args.rate_files], args.model, args.timeout, False) for _ in range(args.rounds)])
        _break_even(few, med)
    print(f"\nafter: {describe()}")


if __name__ == "__main__":
    main()
