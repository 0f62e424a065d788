"""Fuzz one input boundary in this process under a memory bound: ``python fuzz_worker.py TARGET N SEED DIR``.

Each of N inputs is a seeded random mutation of a valid one (checkpoint header, checkpoint bytes, YAML
config, spec JSON). Every outcome must be success or :class:`effnet.errors.EffnetError`; anything else
(a traceback, MemoryError from an unchecked allocation) prints the input and exits 1. The address
space is bounded at 1.5 GiB above what the imports took, so "no allocation before validation" is
enforced, not hoped for. Prints ``ok N refused M``.
"""

from __future__ import annotations

import copy
import json
import random
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from effnet.checkpoint import load_model, save_checkpoint
from effnet.errors import EffnetError
from effnet.model import ConvNet
from effnet.search.trials import resolve_baseline
from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec
from effnet.train.config import TrainConfig, load_config

SPEC = NetworkSpec(name="tiny", stem=StemSpec(out_channels=8), resolution=32, head=HeadSpec(channels=16),
                   stages=(StageSpec(block="mbconv", repeats=1, out_channels=8, stride=1, se_ratio=0.25),
                           StageSpec(block="mbconv", repeats=2, out_channels=16, stride=2, expand_ratio=4,
                                     kernel_size=5)))
NASTY: list[Any] = [0, -1, 1, 2, 3, 7, 10**3, 10**5, 10**7, 10**9, 10**12, 10**30, -(10**9), 0.5, -0.5, 1e9, 1e308,
                    float("nan"), float("inf"), True, False, None, "", "x", "swish", "mbconv", "9" * 50, [], [1],
                    {}, {"a": 1}, [[[]]], "\x00\xff"]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside nested dicts and lists."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def mutate(obj: Any, rng: random.Random, rounds: int = 3) -> Any:
    """Up to ``rounds`` edits: a value replaced by a nasty one or scaled, a key dropped or added, a list grown."""
    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, rounds)):
        paths = _paths(obj)
        if not paths:
            return copy.deepcopy(rng.choice(NASTY))
        path = rng.choice(paths)
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        key, op = path[-1], rng.random()
        value = parent[key]
        if op < 0.55:
            parent[key] = copy.deepcopy(rng.choice(NASTY))
        elif op < 0.7 and isinstance(value, int | float) and not isinstance(value, bool):
            parent[key] = value * rng.choice([10**3, 10**6, -1, 0])
        elif op < 0.8 and isinstance(parent, dict):
            del parent[key]
        elif op < 0.9 and isinstance(parent, dict):
            parent[rng.choice(["extra", "stages", "x" * 30])] = copy.deepcopy(rng.choice(NASTY))
        elif isinstance(parent, list):
            parent.extend(copy.deepcopy(parent[key]) for _ in range(rng.choice([1, 10, 40])))
        else:
            parent[key] = [value] if rng.random() < 0.5 else {"v": value}
    return obj


def fuzz(target: str, n: int, seed: int, d: Path) -> tuple[int, int]:
    rng = random.Random(seed)
    good = save_checkpoint(d / "good.safetensors", ConvNet(SPEC, num_classes=10), overwrite=True)
    header = json.loads(json.dumps({"format_version": 1, "spec": SPEC.to_dict(), "num_classes": 10,
                                    "in_chans": 3, "preprocessing": None}))
    from safetensors.torch import load_file

    tensors = load_file(str(good))
    raw = good.read_bytes()
    config = {k: v for k, v in TrainConfig().to_dict().items() if rng.random() < 0.5}
    ok = refused = 0
    for i in range(n):
        path = d / f"in{i % 4}"
        try:
            if target == "header":
                save_file(tensors, str(path), metadata={"effnet": json.dumps(mutate(header, rng))})
                load_model(path)
            elif target == "bytes":
                data = bytearray(raw)
                end = 8 + int.from_bytes(raw[:8], "little")  # the JSON header
                digits = [j for j in range(8, end) if 48 <= data[j] <= 57]
                for _ in range(rng.randint(1, 8)):
                    if rng.random() < 0.6:  # still valid JSON, other numbers: a subtler hostile header
                        data[rng.choice(digits)] = rng.randrange(48, 58)
                    else:
                        data[rng.randrange(end + 64)] = rng.randrange(256)
                path.write_bytes(bytes(data[: rng.choice([len(data), rng.randrange(len(data))])]))
                load_model(path)
            elif target == "yaml":
                import yaml

                text = yaml.safe_dump(mutate(config, rng)) if rng.random() < 0.7 else "".join(
                    chr(rng.choice([rng.randrange(32, 127), 0, 10, 58, 0xFFFF, 0xD7FF])) for _ in range(60))
                path.write_text(text, errors="surrogatepass")
                load_config(path)
            else:
                path.write_text(json.dumps(mutate(SPEC.to_dict(), rng)))
                resolve_baseline(str(path))
            ok += 1
        except EffnetError:
            refused += 1
        except Exception:
            print(f"input {i} of {target} (seed {seed}) raised:\n{traceback.format_exc()}", file=sys.stderr)
            sys.exit(1)
    return ok, refused


def _bound_memory(extra: int = 3 << 29) -> None:
    """Address space limited to what the process maps now plus ``extra`` bytes (1.5 GiB)."""
    size = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, size + extra))


if __name__ == "__main__":
    target, n, seed, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    import torch

    torch.zeros(1).add_(1)  # let torch map its pools before the bound is set
    ConvNet(SPEC)(torch.zeros(1, 3, 32, 32))
    _bound_memory()
    ok, refused = fuzz(target, n, seed, folder)
    print(f"ok {ok} refused {refused}")
