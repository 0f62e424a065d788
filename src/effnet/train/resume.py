"""A run's resume state (``OUT/state.pt``): written atomically, read back only after every part is checked.

``state.pt`` is read with ``torch.load(weights_only=True)`` (no code runs), but what comes back is
still outside data: a list, a dict from another program, another model's weights, an RNG state of
the wrong size or a history that is not a list of rows. Each is refused here with one line that
names the file, what is wrong and the fix (``--resume`` needs the run's own ``state.pt``; start a
new ``--out``), before any of it is loaded into the run.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from effnet.checkpoint import check_state_dict
from effnet.errors import EffnetError

__all__ = ["STATE", "check_state", "read_state", "write_state"]

STATE = "state.pt"
# Settings that define what the weights are: resuming with another value is another run.
_SAME_RUN = ("model", "phi", "resolution", "total_stride", "data", "class_map", "train_subset", "batch_size",
             "freeze_stages", "init_checkpoint", "pretrained")
_INTS = ("epoch", "step", "batch_in_epoch", "loss_count")
_FIX = "--resume needs the run's own state.pt; start a new run with another --out"


def write_state(state: Mapping[str, Any], out: Path) -> None:
    """Atomic: a temp file in ``out`` then ``os.replace``; a kill never leaves a torn state."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    tmp = out / f".{STATE}.tmp"
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out / STATE)


def read_state(out: Path) -> tuple[Path, dict[str, Any]]:
    """``out/state.pt`` loaded without unpickling code; its structure is checked by :func:`check_state`."""
    path = out / STATE
    if not path.is_file():
        raise EffnetError(f"--resume: no {STATE} in {str(out)!r}; start a new run there without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file: say which, never unpickle more
        raise EffnetError(f"--resume: {path} cannot be read ({type(e).__name__}); it is damaged; {_FIX}") from None
    return path, state


def _bad(path: Path, what: str) -> EffnetError:
    return EffnetError(f"--resume: {path} {what}; {_FIX}")


def check_state(path: Path, state: Any, cfg: Mapping[str, Any], model: torch.nn.Module) -> None:
    """Refuse a resume state that is not this run's, before any of it is loaded.

    Args:
        path: the file, for messages.
        state: what ``torch.load`` returned.
        cfg: the resuming run's settings (``TrainConfig.to_dict()``).
        model: the resuming run's network; the state's weights must fit it key for key.
    """
    if not isinstance(state, dict):
        raise _bad(path, f"holds a {type(state).__name__}, not an effnet resume state")
    missing = [k for k in ("model", "optimizer", "rng", "config", "history", *_INTS) if k not in state]
    if missing:
        raise _bad(path, f"is not an effnet resume state (no {', '.join(missing)})")
    stored = state["config"]
    if not isinstance(stored, dict) or "model" not in stored:
        raise _bad(path, "has no run settings ('config')")
    changed = [k for k in _SAME_RUN if stored.get(k) != cfg.get(k)]
    if changed:
        diffs = ", ".join(f"{k}: {stored.get(k)!r} there, {cfg.get(k)!r} now" for k in changed[:3])
        raise _bad(path, f"is another run ({diffs})")
    other = [k for k in cfg if k in stored and stored[k] != cfg[k] and k not in ("progress", "workers")]
    if other:
        warnings.warn(f"--resume: settings changed since the run started ({', '.join(other[:6])}); a changed "
                      "learning rate or schedule can make the resumed run diverge", stacklevel=3)
    if not isinstance(state["model"], dict):
        raise _bad(path, "holds no weights ('model' is not a state dict)")
    try:
        check_state_dict(model, state["model"], what=str(path))
    except EffnetError as err:
        raise _bad(path, f"holds weights of another model ({str(err).split(': ', 1)[-1][:160]})") from None
    rng = state["rng"]
    if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.shape == torch.get_rng_state().shape):
        raise _bad(path, "has a damaged RNG state ('rng' is not the CPU generator's byte state)")
    for key in _INTS:
        if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0:
            raise _bad(path, f"has a damaged {key!r} ({str(state[key])[:30]!r}, not a count)")
    _check_history(path, state["history"])


def _check_history(path: Path, history: Any) -> None:
    if not isinstance(history, list):
        raise _bad(path, f"has a damaged history ({type(history).__name__}, not a list of epoch rows)")
    for i, row in enumerate(history):
        ok = isinstance(row, dict) and all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) for k, v in row.items())
        if not ok or not {"epoch", "train_loss", "val_loss", "top1"} <= set(row):
            raise _bad(path, f"has a damaged history (row {i} is not an epoch's numbers)")
