"""Fine-tuning benchmark: EfficientNet-Lite0 from its ImageNet weights vs from scratch.

Both runs train the same network with the same recipe and budget (the same 1,000 Fashion-MNIST
training images, picked by one seeded permutation, the same epochs, batch and learning rate) and
are evaluated on all 10,000 test images. Only the initial weights differ, so the gap is what the
ImageNet features are worth with little data (the transfer setting of the paper's §5.2, Table 5).

    python benchmarks/finetune_fashion.py --out runs/finetune           # about 10 min on 2 cores

Prints a table and writes OUT/finetune.json; each run keeps its own directory (metrics.csv,
checkpoints, confusion.png).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from effnet.textfmt import table
from effnet.train.config import TrainConfig
from effnet.train.loop import train


def recipe(args: argparse.Namespace, *, pretrained: bool) -> TrainConfig:
    return TrainConfig(model="efficientnet_lite0", pretrained=pretrained, resolution=args.resolution,
                       data="fashion-mnist", train_subset=args.images, epochs=args.epochs, batch_size=args.batch,
                       warmup_epochs=1, schedule="cosine", augment="none", crop_scale_min=0.6, hflip=True,
                       bn_momentum=0.1, channels_last=True, amp="none", workers=args.workers, seed=args.seed,
                       progress=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/finetune", help="one sub-directory per run")
    p.add_argument("--images", type=int, default=1000, help="training images (a seeded subset of the 60,000)")
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--resolution", type=int, default=64, help="input size (Fashion-MNIST's 28 px resized)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    rows, results = [], {}
    for name, pretrained in (("imagenet-weights", True), ("scratch", False)):
        t = time.time()
        r = train(recipe(args, pretrained=pretrained), out / name)
        seconds = time.time() - t
        m = r["metrics"]
        results[name] = {"top1": m.top1, "top5": m.top5, "loss": m.loss, "seconds": round(seconds, 1)}
        rows.append([name, f"{m.top1:.2f}", f"{m.top5:.2f}", f"{m.loss:.4f}", f"{seconds:.0f}"])
    print(f"EfficientNet-Lite0 on {args.images} Fashion-MNIST training images, {args.epochs:g} epochs, "
          f"batch {args.batch}, {args.resolution} px; tested on 10,000 images")
    print(table(["init", "top-1", "top-5", "test loss", "s"], rows))
    gain = results["imagenet-weights"]["top1"] - results["scratch"]["top1"]
    print(f"fine-tuning gain: {gain:+.2f} top-1 points")
    (out / "finetune.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
