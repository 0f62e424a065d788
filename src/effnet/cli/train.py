"""``effnet train`` and ``effnet finetune``: CLI flags generated from ``TrainConfig``'s fields
(a typed ``merge_from_args``), on top of an optional YAML config (``-c``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any

from effnet.errors import EffnetError


def _field_type(tp: Any) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from effnet.train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    g = p.add_argument_group("training settings (override the config file; defaults = the paper's recipe)")
    for f in dataclasses.fields(TrainConfig):
        tp = _field_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        if tp is bool:
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            g.add_argument(flag, dest=f.name, type=tp, default=None, metavar=tp.__name__.upper(),
                           help=f"default: {f.default}")
    g.add_argument("--spec", dest="model", metavar="SPEC.json",
                   help="train a spec file instead of a registered model (e.g. the baseline.json of `effnet nas`)")


def _config_from_args(args: argparse.Namespace, **forced: Any) -> Any:
    from effnet.train.config import FIELDS, TrainConfig, load_config

    given = {k: v for k, v in vars(args).items() if k in FIELDS and v is not None} | forced
    if args.config:
        return load_config(args.config, **given)
    try:
        return TrainConfig(**given)
    except TypeError as e:
        raise EffnetError(str(e)) from None


def cmd_train(args: argparse.Namespace) -> int:
    from effnet.train.loop import train

    cfg = _config_from_args(args)
    result = train(cfg, args.out, resume=args.resume)
    if result["metrics"] is not None:  # rank 0
        _summary(result)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from effnet.train.loop import train

    forced: dict[str, Any] = {}
    if not args.init_checkpoint and args.pretrained is None:
        forced["pretrained"] = True  # fine-tuning starts from weights: the model's own by default
    cfg = _config_from_args(args, **forced)
    result = train(cfg, args.out, resume=args.resume)
    if result["metrics"] is not None:
        _summary(result)
    return 0


def _summary(result: dict[str, Any]) -> None:
    from effnet.textfmt import table

    rows = [[r["epoch"], r["step"], f"{r['train_loss']:.4f}", f"{r['val_loss']:.4f}", f"{r['top1']:.2f}",
             f"{r['top5']:.2f}", f"{r['seconds']:.0f}"] for r in result["history"]]
    print(table(["epoch", "step", "train loss", "val loss", "top-1", "top-5", "s"], rows))
    print(json.dumps({k: result[k] for k in ("top1", "top5", "best_top1", "epochs", "steps")}), file=sys.stderr)
    print(f"top-1 {result['top1']:.2f}")


def add_commands(sub: Any) -> None:
    for name, func, text in (("train", cmd_train, "train with the paper's recipe (resumable; torchrun for DDP)"),
                             ("finetune", cmd_finetune, "fine-tune from pretrained or checkpoint weights")):
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", help="YAML file of training settings (e.g. configs/fashion-mnist.yaml)")
        p.add_argument("--out", required=True, help="run directory (metrics.csv, checkpoints, state.pt)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its last state")
        _add_config_flags(p)
        p.set_defaults(func=func)

