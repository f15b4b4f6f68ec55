"""Images per second on a CUDA GPU: tl-advise against a plain torchvision loop, embedding and training.

Run by ``benchmarks/gpu_check.sh`` on a machine with a GPU; by hand:

    .venv/bin/python benchmarks/bench_gpu.py --data ../shared/data/hymenoptera --out benchmarks/results/bench_gpu.json

- **embedding**: every image of DATA that torchvision's ``ImageFolder`` reads, through efficientnet_lite0 (body +
  ImageNet head) in batches of 32 under ``torch.inference_mode()``: a plain ``ImageFolder`` + ``DataLoader``
  (``num_workers=4, pin_memory=True``) + ``model(x.cuda())`` loop, against tl-advise's ``embed()`` (no cached
  rows, BN statistics on: what a cold advise pays). A warm-up round first (cuDNN autotuning, the page cache),
  then ``--rounds`` interleaved rounds; the best round counts.
- **training**: full fine-tuning of efficientnet_lite0 with a new linear head on DATA's training split,
  ``--epochs`` epochs, each followed by a pass over the validation split, as tl-advise's runner times it:
  a plain fp32 loop (RandomResizedCrop + flip, Adam, batch 32, ``num_workers=4, pin_memory=True``) against
  ``tl-advise --run --strategies full_finetune --head-epochs 0`` through the Python API (its own recipe:
  autocast, GradScaler, channels_last). Images per second = training images seen / (train + validation
  seconds).

Without a visible CUDA device it stops at once with exit code 2 and says so. ``--device cpu`` runs the same
code on the CPU, only to check the script itself (tiny sizes advised); its numbers say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench_gpu")

REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_NO_GPU = 2
BATCH_SIZE = 32
WORKERS = 4
NO_GPU_MESSAGE = ("bench_gpu: no CUDA device is visible (torch.cuda.is_available() is False; torch {torch}, "
                  "built for CUDA {cuda}). Run this on a machine with an NVIDIA GPU and a CUDA build of torch; "
                  "check `nvidia-smi` and CUDA_VISIBLE_DEVICES.")


def cuda_problem() -> str | None:
    """None when a CUDA device is usable, else the message to print."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return None
    return NO_GPU_MESSAGE.format(torch=torch.__version__, cuda=torch.version.cuda)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def facts(device: Any) -> dict[str, Any]:
    import numpy as np
    import PIL
    import torch
    import torchvision

    out: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": str(device), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "numpy": np.__version__, "pillow": PIL.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu_name=torch.cuda.get_device_name(device), gpu_count=torch.cuda.device_count(),
                   gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   gpu_capability=f"{props.major}.{props.minor}")
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False)
        out["nvidia_smi"] = smi.stdout.strip().splitlines()
    return out


# --------------------------------------------------------------------------- embedding


def embedding(data: Path, device: Any, rounds: int, limit: int | None) -> dict[str, Any]:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from tl_advise.advisor.measure.cache import ArrayCache
    from tl_advise.advisor.measure.images.backbones import load_backbone
    from tl_advise.advisor.measure.images.embed import embed

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from bench_advise import plain_dataset, plain_transform, throughput_inputs

    inputs = throughput_inputs(data, sample_only=False)
    if limit:
        inputs.records = inputs.records[:limit]
        inputs.selected = {os.path.abspath(r.path) for r in inputs.records}
    plain_net = load_backbone("efficientnet_lite0").eval()
    plain_model = nn.Sequential(plain_net.body, plain_net.head).eval().to(device)
    ours_net = load_backbone("efficientnet_lite0")
    dataset = plain_dataset(inputs, plain_transform(plain_net.preprocessing))
    n = len(dataset)

    def plain() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for x, _ in DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=WORKERS, pin_memory=True):
                plain_model(x.to(device, non_blocking=True)).argmax(-1).cpu()
        sync(device)
        return time.perf_counter() - start

    def ours() -> float:
        start = time.perf_counter()
        emb = embed(ours_net, inputs.records, root=inputs.root, device=device, cache=ArrayCache(None),
                    collect_bn=True, batch_size=BATCH_SIZE, num_workers=WORKERS)
        sync(device)
        if emb.failed:
            raise RuntimeError(f"embed() failed on {len(emb.failed)} images")
        return time.perf_counter() - start

    plain(), ours()  # warm-up: cuDNN autotuning, the page cache, worker start-up paths
    times: dict[str, list[float]] = {"plain": [], "tl_advise": []}
    for _ in range(rounds):
        times["plain"].append(plain())
        times["tl_advise"].append(ours())
    best = {k: min(v) for k, v in times.items()}
    return {"images": n, "rounds_s": times, "images_per_s": {k: round(n / v, 1) for k, v in best.items()},
            "ratio": round(best["plain"] / best["tl_advise"], 3)}


# --------------------------------------------------------------------------- training


def plain_training(data: Path, device: Any, epochs: int, image_size: int) -> dict[str, Any]:
    """The loop a user would write from the torchvision fine-tuning tutorial, fp32."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision import transforms as T

    from tl_advise.advisor.measure.images.backbones import load_backbone

    net = load_backbone("efficientnet_lite0")
    pre = net.preprocessing
    normalize = T.Normalize(pre.mean, pre.std)
    train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    val_tf = T.Compose([T.Resize(round(image_size / pre.crop_pct)), T.CenterCrop(image_size), T.ToTensor(),
                        normalize])
    train = datasets.ImageFolder(str(data / "train"), transform=train_tf)
    val = datasets.ImageFolder(str(data / "val"), transform=val_tf)
    model = nn.Sequential(net.body, nn.Flatten(), nn.Linear(net.info.feature_dim, len(train.classes))).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    torch.manual_seed(0)
    seen, seconds = 0, 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for x, y in DataLoader(train, batch_size=BATCH_SIZE, shuffle=True, num_workers=WORKERS, pin_memory=True):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
            seen += len(y)
        model.eval()
        correct = 0
        with torch.inference_mode():
            for x, y in DataLoader(val, batch_size=64, num_workers=WORKERS, pin_memory=True):
                correct += int((model(x.to(device)).argmax(-1).cpu() == y).sum())
        sync(device)
        seconds += time.perf_counter() - start
    return {"train_images": len(train), "epochs": epochs, "seconds": round(seconds, 3),
            "images_per_s": round(seen / seconds, 1), "val_accuracy": round(correct / len(val), 4)}


def tl_advise_training(data: Path, device_name: str, epochs: int, image_size: int, work: Path) -> dict[str, Any]:
    from tl_advise.advisor.api import advise_session
    from tl_advise.runners.api import run_advice
    from tl_advise.schema.run_options import RunOptions

    session = advise_session(data, device=device_name, cache_dir=work / "cache")
    options = RunOptions(output_dir=work / "run", strategies=["full_finetune"], head_epochs=0,
                         finetune_epochs=epochs, patience=epochs + 1, image_size=image_size, device=device_name,
                         progress=False, num_workers=WORKERS)
    report = run_advice(session, options)
    run = report.runs[0]
    if run.status == "failed":
        raise RuntimeError(f"tl-advise full_finetune failed: {run.error}")
    return {"strategy": run.strategy, "status": run.status, "epochs": run.epochs_run, "seconds": run.train_time_s,
            "images_per_s": run.images_per_s, "val_accuracy": run.val.accuracy if run.val else None,
            "device": report.device}


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    default_data = Path(os.environ.get("TL_ADVISE_SHARED", REPO_ROOT.parent / "shared")) / "data" / "hymenoptera"
    p.add_argument("--data", type=Path, default=default_data, help="an image folder with train/ and val/")
    p.add_argument("--device", default="cuda", help="cuda (default) or cuda:N; 'cpu' only checks the script")
    p.add_argument("--rounds", type=int, default=3, help="timed embedding rounds after the warm-up")
    p.add_argument("--epochs", type=int, default=2, help="training epochs per pipeline")
    p.add_argument("--image-size", type=int, default=224, help="training input size")
    p.add_argument("--limit", type=int, help="embed only the first N images (for a quick check)")
    p.add_argument("--skip", nargs="*", default=[], choices=("embedding", "training"))
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "bench_gpu.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    import torch

    if args.device.startswith("cuda") and (problem := cuda_problem()):
        print(problem, file=sys.stderr)
        return EXIT_NO_GPU
    if not (args.data / "train").is_dir() or not (args.data / "val").is_dir():
        print(f"bench_gpu: {args.data} has no train/ and val/ folders; pass --data PATH "
              "(e.g. ../shared/data/hymenoptera)", file=sys.stderr)
        return EXIT_NO_GPU
    device = torch.device(args.device)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    results: dict[str, Any] = {"command": command, "data": str(args.data), "machine": facts(device)}
    try:
        results["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        results["git_commit"] = "unknown"
    if "embedding" not in args.skip:
        logger.info("embedding throughput on %s", device)
        results["embedding"] = embedding(args.data, device, args.rounds, args.limit)
        logger.info("embedding: %s", results["embedding"]["images_per_s"])
    if "training" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
            logger.info("training throughput on %s: plain loop", device)
            plain = plain_training(args.data, device, args.epochs, args.image_size)
            logger.info("training throughput on %s: tl-advise full_finetune", device)
            ours = tl_advise_training(args.data, args.device, args.epochs, args.image_size, Path(tmp))
        results["training"] = {"plain": plain, "tl_advise": ours,
                               "ratio": round(ours["images_per_s"] / plain["images_per_s"], 3)}
        logger.info("training img/s: plain %.1f, tl-advise %.1f", plain["images_per_s"], ours["images_per_s"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
