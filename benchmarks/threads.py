"""Threads × OpenMP wait policy, on a quiet machine and beside one competing CPU-bound process.

    .venv/bin/python benchmarks/threads.py                  # the default grid, a few minutes on 2 cores
    .venv/bin/python benchmarks/threads.py --rounds 2 --reps 5 --priority -19 \
        --contenders "1:default,1:PASSIVE,2:default,2:PASSIVE,2:spin 10k,0:effnet"   # docs/performance.md

Why: torch's CPU ops run on its bundled GNU OpenMP, whose threads spin at every barrier before
they sleep. When another process holds a core, the spinning thread waits for a partner that the OS
has descheduled, B0 has ~250 such barriers per forward pass, and a 2-thread run can become 20×
slower than a 1-thread one. ``OMP_WAIT_POLICY=PASSIVE`` makes the threads sleep at once instead,
``GOMP_SPINCOUNT`` shortens the spin (GCC libgomp manual). The runtime reads them when it starts, so
every contender here runs in a FRESH Python process whose environment is set before torch loads.

Contenders (``--contenders``): THREADS:POLICY pairs, policies in :data:`POLICIES`; threads 0 with
policy "effnet" lets ``effnet.threads.configure()`` choose in the fresh process, as every ``effnet``
command does. Each runs quiet and loaded; "loaded" means one ``python -c 'while True: pass'`` that
this script starts before the contender and stops after it. Workloads, each timed after warm-up,
median of ``--reps`` calls per process and the median of those over ``--rounds`` rounds
(contenders shuffled in each round):

- train: one training step (forward, backward, RMSProp-TF) of EfficientNet-B0 at φ = −4 with total
  stride 8 at 32 px, batch 64, channels_last, fp32 (the fashion-mnist recipe's network family;
  docs/training.md).
- infer: effnet's eager B0 @224 (BN folded, channels_last), batch 1, fp32.

The table prints the load average before and after, the CPU's vector features and the niceness. The
machine may be shared: read the ratios between rows measured in the same run, not the absolute
times. On a shared Linux machine, ``--priority -19`` (root) approximates a quiet one: the contenders
and the busy loop then outweigh the other jobs, which keep running; the effnet contender still sees
those jobs and chooses as on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Wait policies: the environment each sets. GNU OpenMP spins GOMP_SPINCOUNT times (300,000 by default;
# each spin is one `pause`, ~40-140 cycles) before it sleeps; PASSIVE sleeps at once (libgomp manual).
POLICIES = {"default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
            "spin 10k": {"GOMP_SPINCOUNT": "10000"}, "spin 1k": {"GOMP_SPINCOUNT": "1000"},
            "effnet": {}}  # effnet.threads.configure() in the fresh process: threads and policy from the machine
CHOSEN: dict[tuple[str, bool], list[str]] = {}  # what the "effnet" contenders chose
CONTENDERS = "1:default,1:PASSIVE,2:default,2:PASSIVE,0:effnet"
ROOT = Path(__file__).resolve().parents[1]


def _worker(task: str, reps: int, budget_s: float) -> None:
    """Runs inside a fresh process: times ``task`` and prints one JSON line of per-call seconds."""
    if os.environ.get("THREADS_BENCH_POLICY") == "effnet":  # what every `effnet` command does first
        from effnet.threads import configure

        configure()
    import torch

    import effnet
    from effnet.train.config import TrainConfig
    from effnet.train.loop import build_model
    from effnet.train.optim import build_optimizer

    torch.manual_seed(0)
    if task == "train":
        cfg = TrainConfig(model="efficientnet_b0", phi=-4, total_stride=8, resolution=32, bn_momentum=0.1)
        model = build_model(cfg, num_classes=10).to(memory_format=torch.channels_last).train()
        opt = build_optimizer(model, "rmsproptf", 0.016 * 64 / 256, weight_decay=1e-5)
        x = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (64,))

        def call() -> None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        from effnet.deploy.inference import build_engine

        x = torch.randn(1, 3, 224, 224)
        fast = build_engine(effnet.create_model("efficientnet_b0").eval(), "eager", example=x)

        def call() -> None:
            fast(x)

    for _ in range(3):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    print(json.dumps({"threads": torch.get_num_threads(), "times": times,
                      "policy": os.environ.get("OMP_WAIT_POLICY", "default")}))


def _run_contender(task: str, threads: int, policy: str, loaded: bool, reps: int, budget_s: float) -> float:
    """Median seconds per call of one contender in a fresh process (threads 0: effnet's choice)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "THREADS_BENCH_POLICY": policy}
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "EFFNET_THREADS"):
        env.pop(name, None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(POLICIES[policy])
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", task, "--reps", str(reps),
                              "--budget", str(budget_s)], env=env, capture_output=True, text=True,
                             timeout=budget_s + 300, check=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["threads"] == threads or not threads, result
    if policy == "effnet":
        CHOSEN.setdefault((task, loaded), []).append(f"{result['threads']} {result['policy']}")
    return statistics.median(result["times"])


def cpu_features() -> str:
    """The CPU's model name and vector features that decide which kernels torch and ORT run."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
    return f"{model}; {', '.join(f for f in wanted if f in flags) or 'no AVX2'}; {os.cpu_count()} logical CPUs"


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _priority(nice: int | None) -> str:
    """Raise this process group's priority (Linux, root): with autogroup scheduling, a plain ``nice``
    only ranks processes within one login session, so the session's autogroup is set as well
    (sched(7), "The autogroup feature"). Returns the autogroup's previous nice value."""
    group = Path("/proc/self/autogroup")
    old = group.read_text().split()[-1] if group.exists() else "0"
    if nice is not None:
        if group.exists():
            group.write_text(str(nice))
        os.nice(nice - os.nice(0))
    return old


def _chosen(task: str, loaded: bool) -> str:
    """What the effnet contender's processes chose, e.g. '2 default' or '1 PASSIVE'."""
    return "/".join(sorted(set(CHOSEN.get((task, loaded), []))))


def _table(tasks: list[str], contenders: list[tuple[int, str]], med: dict[tuple, float]) -> None:
    print("| workload | threads | wait policy | quiet ms | loaded ms | loaded / quiet | loaded / today's quiet "
          "| quiet / today's quiet |")
    print("|---|---|---|---|---|---|---|---|")
    for t in tasks:
        base = med.get((t, 2, "default", False))  # today: torch's 2 threads, policy unset
        for n, pol in contenders:
            q, ld = med[(t, n, pol, False)], med[(t, n, pol, True)]
            label = "B0 φ=−4 32 px train step, b64" if t == "train" else "eager B0 @224, b1"
            threads = str(n) if n else f"quiet: {_chosen(t, False)}; loaded: {_chosen(t, True)}"
            vs = "-" if base is None else f"{ld / base:.2f}× | {q / base:.2f}"
            print(f"| {label} | {threads} | {pol} | {1e3 * q:.1f} | {1e3 * ld:.1f} | {ld / q:.2f}× | {vs} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=("train", "infer"), help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=9, help="timed calls per process (median)")
    p.add_argument("--budget", type=float, default=25.0, help="seconds of timed calls per process, at most")
    p.add_argument("--rounds", type=int, default=1, help="rounds over the whole grid (median of medians)")
    p.add_argument("--tasks", default="train,infer")
    p.add_argument("--contenders", default=CONTENDERS,
                   help=f"comma list of THREADS:POLICY, policies {', '.join(POLICIES)} ({CONTENDERS})")
    p.add_argument("--priority", type=int, metavar="NICE",
                   help="as root on a shared machine: run at this nice (e.g. -19) to approximate a quiet one")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the busy loop and the worker
    if args.worker:
        _worker(args.worker, args.reps, args.budget)
        return
    tasks = args.tasks.split(",")
    contenders = [(int(c.split(":")[0]), c.split(":", 1)[1]) for c in args.contenders.split(",")]
    grid = [(t, n, pol, ld) for t in tasks for n, pol in contenders for ld in (False, True)]
    old_priority = _priority(args.priority)
    try:
        med = _measure(grid, args)
    finally:
        if args.priority is not None:
            _priority(int(old_priority))
    print(f"CPU: {cpu_features()}\nmedians of {args.reps} calls per fresh process, median over {args.rounds} "
          "round(s); loaded = one `python -c 'while True: pass'` beside it; niceness "
          f"{args.priority if args.priority is not None else os.nice(0)} (contenders and the busy loop alike)\n")
    _table(tasks, contenders, med)


def _measure(grid: list[tuple], args: argparse.Namespace) -> dict[tuple, float]:
    load_before, t0 = _load(), time.time()
    results: dict[tuple, list[float]] = {g: [] for g in grid}
    rng = random.Random(0)
    for r in range(args.rounds):
        order = grid[:]
        rng.shuffle(order)
        for i, g in enumerate(order, 1):
            results[g].append(_run_contender(*g, args.reps, args.budget))
            print(f"round {r + 1}/{args.rounds} {i}/{len(order)} {g}: {1e3 * results[g][-1]:.1f} ms "
                  f"(load {_load()})", file=sys.stderr, flush=True)
    print(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))} in {time.time() - t0:.0f} s; "
          f"load average (1/5/15 min) {load_before} before, {_load()} after")
    return {g: statistics.median(v) for g, v in results.items()}


if __name__ == "__main__":
    main()
