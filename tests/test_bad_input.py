"""Hostile and careless input at every boundary where outside data enters the CLI: each case ends in
exactly one line ``effnet: error: ...`` on stderr naming the value, exit code 2, and no traceback.

The cases are the ones a probe of 206 bad inputs found ending in tracebacks (checkpoint headers that
ask for huge networks, YAML of the wrong shape, output paths that cannot be written, foreign resume
states, broken search storages), plus their neighbours. docs/limits.md documents the limits.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from effnet.checkpoint import save_checkpoint
from effnet.cli.app import main
from effnet.errors import CheckpointError
from effnet.limits import TRUST_ENV
from effnet.model import ConvNet
from effnet.spec import NetworkSpec

pytest.importorskip("sklearn")

RESUME = {"model": "efficientnet_b0", "phi": -8.0, "total_stride": 8, "resolution": 16, "data": "digits",
          "batch_size": 32, "train_subset": 64, "epochs": 1.0, "workers": 0, "progress": False, "amp": "none"}


def _flags(cfg: dict[str, Any]) -> list[str]:
    out = []
    for k, v in cfg.items():
        flag = k.replace("_", "-")
        out += [f"--{flag}" if v else f"--no-{flag}"] if isinstance(v, bool) else [f"--{flag}", str(v)]
    return out


def hostile_checkpoint(good: Path, out: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    """``good``'s tensors under a header changed by ``mutate`` (what a hand-edited file would hold)."""
    with safe_open(str(good), framework="pt") as f:
        meta = json.loads(f.metadata()["effnet"])
    mutate(meta)
    save_file(load_file(str(good)), str(out), metadata={"effnet": json.dumps(meta)})
    return out


def _set(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(meta: dict[str, Any]) -> None:
        d = meta
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value
    return mutate


HEADERS = {
    "channels_1e7": _set("spec", "stages", 0, "out_channels", value=10**7),
    "head_1e9": _set("spec", "head", "channels", value=10**9),
    "classes_1e10": _set("num_classes", value=10**10),
    "kernel_1e5": _set("spec", "stages", 0, "kernel_size", value=100_001),
    "expand_1e9": _set("spec", "stages", 0, "expand_ratio", value=1e9),
    "resolution_1e9": _set("spec", "resolution", value=10**9),
    "channels_string": _set("spec", "stem", "out_channels", value="many"),
    "shape_mismatch": _set("spec", "stages", 0, "out_channels", value=16),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    from effnet.spec import HeadSpec, StageSpec, StemSpec

    spec = NetworkSpec(name="tiny", stem=StemSpec(out_channels=8), resolution=32, head=HeadSpec(channels=32),
                       stages=(StageSpec(block="mbconv", repeats=1, out_channels=8, stride=1, se_ratio=0.25),))
    good = save_checkpoint(d / "good.safetensors", ConvNet(spec, num_classes=10))
    out = {"good": good, "dir": d}
    for name, mutate in HEADERS.items():
        out[name] = hostile_checkpoint(good, d / f"{name}.safetensors", mutate)
    Image.new("RGB", (40, 40), (200, 30, 30)).save(d / "img.png")
    out["img"] = d / "img.png"
    (d / "a_file").write_text("not a folder")
    (d / "wrongtype.yaml").write_text("epochs: three\n")
    (d / "nested.yaml").write_text("batch_size:\n  value: 32\n")
    (d / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (d / "journal_dir").mkdir()
    (d / "corrupt.log").write_bytes(b'{"op_code": 0, "worker_id": "w"}\n\x00\xff garbage\n{"op_code": 1}\n')
    (d / "unreplayable.log").write_text('{"op_code": 0}\n')
    return out


def _resume_dir(d: Path, name: str, change: Callable[[dict[str, Any]], Any]) -> Path:
    """A run folder whose state.pt is a valid state of RESUME's run, then changed by ``change``."""
    from effnet.train.config import TrainConfig
    from effnet.train.loop import build_model

    cfg = TrainConfig(**RESUME).resolved()
    state: Any = {"model": build_model(cfg, 10).state_dict(), "optimizer": {}, "ema": None,
                  "rng": torch.get_rng_state(), "config": cfg.to_dict(), "history": [], "epoch": 0, "step": 0,
                  "batch_in_epoch": 0, "loss_sum": 0.0, "loss_count": 0, "best_top1": -1.0}
    state = change(state) or state
    run = d / name
    run.mkdir()
    torch.save(state, run / "state.pt")
    return run


RESUME_CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "state_list": (lambda s: [1, 2, 3], "holds a list"),
    "state_no_config": (lambda s: s.pop("config") and None, "no config"),
    "state_other_model": (lambda s: s["config"].update(model="efficientnet_b1"), "is another run (model:"),
    "state_other_weights": (lambda s: s.update(model={"stem.conv.weight": torch.zeros(1)}), "weights of another"),
    "state_bad_rng": (lambda s: s.update(rng=torch.zeros(7, dtype=torch.uint8)), "damaged RNG state"),
    "state_bad_history": (lambda s: s.update(history=[{"epoch": "one"}]), "damaged history"),
    "state_history_not_list": (lambda s: s.update(history="abc"), "damaged history"),
}


def _cases(f: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, a fragment the error line must contain)."""
    img, good, d = str(f["img"]), str(f["good"]), f["dir"]
    train = ["train", "--data", "digits", "--epochs", "1", "--workers", "0", "--no-progress"]
    cases: dict[str, tuple[list[str], str]] = {
        f"header_{name}": (["predict", img, "--checkpoint", str(f[name])], text) for name, text in (
            ("channels_1e7", "stages[0].out_channels = 1e+07"), ("head_1e9", "head.channels = 1e+09"),
            ("classes_1e10", "num_classes"), ("kernel_1e5", "kernel_size = 100,001"),
            ("expand_1e9", "expand_ratio = 1e+09"), ("resolution_1e9", "resolution = 1e+09"),
            ("channels_string", "stem.out_channels: must be an integer"),
            ("shape_mismatch", "has shape"))}
    cases |= {
        "yaml_wrongtype": (["train", "-c", str(d / "wrongtype.yaml"), "--out", str(d / "r1")], "epochs: must be"),
        "yaml_nested": (["train", "-c", str(d / "nested.yaml"), "--out", str(d / "r2")], "batch_size: must be"),
        "yaml_binary": (["train", "-c", str(d / "binary.yaml"), "--out", str(d / "r3")], "not UTF-8"),
        "train_out_is_file": ([*train, "--out", str(d / "a_file")], "is an existing file"),
        "train_out_unwritable": ([*train, "--out", "/proc"], "cannot write in '/proc'"),
        "train_out_readonly_fs": ([*train, "--out", "/proc/nope"], "cannot create the folder"),
        "scale_plot_readonly_fs": (["scale", "--plot", "/proc/plot.png"], "--plot '/proc/plot.png'"),
        "scale_plot_missing_parent": (["scale", "--plot", str(d / "no" / "p.png")], "does not exist"),
        "scale_plot_is_dir": (["scale", "--plot", str(d)], "is a folder"),
        # `export --out DIR` creates DIR and its parents; one that cannot be created is the error.
        "export_readonly_fs": (["export", "efficientnet_b0", "--out", "/proc/b0"], "cannot create the folder"),
        "export_missing_parent": (["export", "efficientnet_b0", "--out", "/proc/nope/b0"], "cannot create the folder"),
        # `cam --out DIR` creates DIR (and its parents), so a missing parent is no error; an uncreatable one is.
        "cam_missing_parent": (["cam", img, "--checkpoint", good, "--out", "/proc/none/x"], "cannot create the folder"),
        "cam_readonly_fs": (["cam", img, "--checkpoint", good, "--out", "/proc/x"], "cannot create the folder"),
        "eval_confusion_readonly": (["eval", "--checkpoint", good, "--data", "digits", "--confusion", "/proc/c.png"],
                                    "--confusion"),
        "storage_is_dir": (["search", "--storage", str(d / "journal_dir"), "--out", str(d / "s1")], "is a folder"),
        "storage_corrupt": (["search", "--storage", str(d / "corrupt.log"), "--out", str(d / "s2")], "line 2"),
        "storage_unreplayable": (["search", "--storage", str(d / "unreplayable.log"), "--out", str(d / "s3")],
                                 "cannot replay"),
    }
    for name, (_, text) in RESUME_CASES.items():
        cases[name] = (["train", *_flags(RESUME), "--out", str(d / name), "--resume"], text)
    return cases


CASE_NAMES = sorted([f"header_{n}" for n in HEADERS] + list(RESUME_CASES) + [
    "yaml_wrongtype", "yaml_nested", "yaml_binary", "train_out_is_file", "train_out_unwritable",
    "train_out_readonly_fs", "scale_plot_readonly_fs", "scale_plot_missing_parent", "scale_plot_is_dir",
    "export_readonly_fs", "export_missing_parent", "cam_missing_parent", "cam_readonly_fs", "eval_confusion_readonly",
    "storage_is_dir", "storage_corrupt", "storage_unreplayable"])


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_one_line_exit_2(case: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    if case in RESUME_CASES and not (files["dir"] / case).exists():
        _resume_dir(files["dir"], case, RESUME_CASES[case][0])
    argv, fragment = _cases(files)[case]
    before = {p.name for p in Path("/proc").iterdir()} if "/proc" in " ".join(argv) else None
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("effnet: warning:")]
    assert len(lines) == 1 and lines[0].startswith("effnet: error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    if before is not None:
        assert not Path("/proc/nope").exists()


def test_corrupt_journal_is_never_rewritten(files: dict[str, Path]) -> None:
    data = (files["dir"] / "corrupt.log").read_bytes()
    assert main(["search", "--storage", str(files["dir"] / "corrupt.log"), "--out", str(files["dir"] / "s4")]) == 2
    assert (files["dir"] / "corrupt.log").read_bytes() == data


def test_a_trusted_file_over_the_limits_loads_with_the_env_switch(files: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Lifting the limits is possible, and the header is still checked against the file's tensors."""
    from effnet.checkpoint import load_model

    big = hostile_checkpoint(files["good"], files["dir"] / "big.safetensors",
                             _set("spec", "stages", 0, "kernel_size", value=17))
    with pytest.raises(CheckpointError, match="kernel_size = 17"):
        load_model(big)
    monkeypatch.setenv(TRUST_ENV, "1")
    with pytest.raises(CheckpointError, match="has shape"):  # its tensors are 3x3: the header lies
        load_model(big)
    assert load_model(files["good"]).num_classes == 10


def test_hostile_header_refused_fast_and_small(files: dict[str, Path]) -> None:
    """A header asking for 10^7 channels is refused in a fresh process without the memory it asks for:
    the process runs under a 1 GiB address-space bound above its start, and reports the RSS it added."""
    code = textwrap.dedent(f"""
        import resource, sys, time
        import effnet.checkpoint as c
        from effnet.errors import CheckpointError
        rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        base = rss()
        for name in {sorted(HEADERS)!r}:
            t = time.perf_counter()
            try:
                c.load_model({str(files["dir"])!r} + "/" + name + ".safetensors")
                sys.exit(name + " loaded")
            except CheckpointError:
                pass
            print(name, time.perf_counter() - t)
        print("added_kb", rss() - base)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          preexec_fn=_bound_memory)
    assert proc.returncode == 0, proc.stderr[-2000:]
    added = int(proc.stdout.split("added_kb")[1])
    assert added < 200 * 1024, proc.stdout  # 200 MB


def _bound_memory() -> None:
    """No more than 6 GiB of address space: torch's import maps ~3 GiB; 10^7 channels would need far more."""
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def test_the_type_schemas_cover_every_spec_field() -> None:
    """limits' raw-dict schemas list each spec dataclass's fields by hand; a field added to a spec
    without a schema entry would make every checkpoint header that carries it 'unknown key'."""
    import dataclasses

    from effnet import limits
    from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec

    def names(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert set(limits._STEM) == names(StemSpec)
    assert set(limits._STAGE) == names(StageSpec)
    assert set(limits._HEAD) == names(HeadSpec)
    assert set(limits._NET) == names(NetworkSpec) - {"stem", "stages", "head"}
