"""Data-parallel ``--run`` (issue #13): torchrun / ``--nproc-per-node`` with gloo on the CPU.

The process tests train on the real ants-and-bees photos (capped at 40 per class, 64 px) in two
processes and in one, and hold them against each other: the same validation accuracy at every epoch and
the same loss curves (the feature head bit for bit: its batches, batch norm and dropout masks are the
one-process ones; fine-tuning within float rounding of the all-reduce), one set of
files, and a resume after one rank is stopped mid-run. Two spawned gloo processes check the
collectives and hold the whole-batch batch norm and dropout to the one-process gradient.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import shared_dataset

from tl_advise.runners import checkpoint
from tl_advise.runners.data import epoch_generator, make_loader
from tl_advise.runners.distributed import BatchSplit, ShardedShuffle, shard, unshard
from tl_advise.runners.finetune import one_process_order
from tl_advise.runners.train import LoopState
from tl_advise.schema.models import EpochLog

# --------------------------------------------------------------------------- pieces, in one process


def test_shards_cover_every_item_once_and_unshard_restores_the_order() -> None:
    items = list(range(11))
    parts = [items[r::3] for r in range(3)]
    assert sorted(x for p in parts for x in p) == items
    assert unshard(parts) == items
    assert shard(items) == items  # one process: all of it


def test_the_ranks_batches_of_a_step_are_the_one_process_batch() -> None:
    n, batch, world, seed, epoch = 23, 8, 2, 5, 3
    loader = make_loader(list(range(n)), batch_size=batch, shuffle=True, num_workers=0,  # type: ignore[arg-type]
                         generator=epoch_generator(seed, epoch))
    one_process = [b.tolist() for b in loader]
    assert one_process_order(seed, epoch, n) == [i for b in one_process for i in b]  # as the loader itself
    split = BatchSplit.of(batch, world)
    per_rank = []
    for rank in range(world):
        sampler = ShardedShuffle(n, lambda e: one_process_order(seed, e, n), rank=rank, size=world)
        sampler.set_epoch(epoch)
        order = list(sampler)
        per_rank.append([order[i:i + split.per_rank] for i in range(0, len(order), split.per_rank)])
    steps = [sorted(i for rank in per_rank for i in rank[step]) for step in range(len(per_rank[0]))]
    # Every full step is exactly the one-process batch; the last one is padded to equal shards.
    assert steps[:-1] == [sorted(b) for b in one_process[:-1]]
    assert set(steps[-1]) >= set(one_process[-1])


def test_batch_split_keeps_the_recipe_batch_as_the_effective_batch() -> None:
    assert BatchSplit.of(32, 1) == BatchSplit(world_size=1, per_rank=32, effective=32)
    assert BatchSplit.of(32, 4) == BatchSplit(world_size=4, per_rank=8, effective=32)
    assert BatchSplit.of(30, 4).per_rank == 8  # rounded up: effective 32, recorded as such
    with pytest.raises(Exception, match="--batch-size 16"):
        BatchSplit.of(8, 8)  # one image per process: batch norm cannot train


def test_loop_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    loop = LoopState(phase_index=1, epoch_in_phase=2, epochs_run=5, best_loss=0.25, best_epoch=4,
                     best_state={"w": torch.ones(2)}, bad_epochs=1, elapsed_s=3.5, images_seen=640,
                     curves=[EpochLog(phase="head", epoch=1, train_loss=0.5, val_loss=0.4, val_accuracy=0.8,
                                      seconds=1.0)], finished=True)
    checkpoint.atomic_save(loop.to_checkpoint(), tmp_path / "state.pt")
    back = LoopState.from_checkpoint(checkpoint.load(tmp_path / "state.pt"))
    assert back.curves == loop.curves and torch.equal(back.best_state["w"], loop.best_state["w"])  # type: ignore[index]
    assert {k: v for k, v in vars(back).items() if k not in ("curves", "best_state")} == \
        {k: v for k, v in vars(loop).items() if k not in ("curves", "best_state")}


def test_several_processes_without_run_are_refused(tmp_path: Path) -> None:
    from tl_advise.cli import main

    assert main([str(tmp_path), "--nproc-per-node", "2"]) == 2


# --------------------------------------------------------------------------- two gloo processes, in-process checks


def _two_rank_checks(rank: int, init_file: str, out_dir: str) -> None:
    """Rank ``rank`` of 2: the collectives and the whole-batch layers against one-process arithmetic."""
    import copy

    import torch.distributed as dist

    from tl_advise.runners import distributed
    from tl_advise.schema.errors import ConfigError

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    results: dict[str, Any] = {}
    try:
        def refuse() -> int:
            raise ConfigError("rank 0 says no")

        try:
            distributed.from_main(refuse)
            results["error"] = None
        except ConfigError as exc:
            results["error"] = str(exc)
        results["value"] = distributed.from_main(lambda: 40 + 2)
        rows = torch.arange(7.0).unsqueeze(1) * 10
        results["gathered"] = distributed.gather_rows(rows[rank::2]).squeeze(1).tolist()

        # One process: a batch of 8 through BN and dropout (seeded), its loss gradient and BN statistics.
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Dropout(0.5),
                                  torch.nn.Linear(5, 3))
        x, y = torch.randn(8, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        reference = copy.deepcopy(net)
        torch.manual_seed(1)
        torch.nn.functional.cross_entropy(reference(x), y).backward()
        # Two processes: rows rank::2 each, the whole-batch layers under DDP, the same seed.
        ddp = torch.nn.parallel.DistributedDataParallel(distributed.whole_batch_layers(net))
        torch.manual_seed(1)
        torch.nn.functional.cross_entropy(ddp(x[rank::2]), y[rank::2]).backward()
        results["grad_gap"] = max((a.grad - b.grad).abs().max().item()  # type: ignore[operator]
                                  for a, b in zip(reference.parameters(), net.parameters(), strict=True))
        results["stats_gap"] = max((reference[1].running_mean - net[1].running_mean).abs().max().item(),
                                   (reference[1].running_var - net[1].running_var).abs().max().item())
        # gloo aborted a rank once ("terminate called without an active exception") when the group went while
        # DDP's reducer still held it or the other rank still used it: release DDP, then meet before tearing down.
        del ddp
        dist.barrier()
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))


@pytest.mark.slow
def test_collectives_and_whole_batch_layers_in_two_gloo_processes(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_checks, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert results["error"] == "rank 0 says no"  # raised on every rank, not only where it happened
        assert results["value"] == 42
        assert results["gathered"] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        # The gradient DDP averages is the one-process batch's: batch statistics and dropout masks alike.
        assert results["grad_gap"] < 1e-5 and results["stats_gap"] < 1e-5


# --------------------------------------------------------------------------- processes

RUN_ARGS = ("--per-class", "8", "--run", "--strategies", "feature_extraction,finetune_last_layers",
            "--max-train-per-class", "40", "--image-size", "64", "--head-epochs", "2", "--finetune-epochs", "2",
            "--batch-size", "16", "--workers", "0", "--format", "json", "--no-tensorboard")
ONE_SET = ["feature_extraction/model.pt", "feature_extraction/run.json", "feature_extraction/state.pt",
           "finetune_last_layers/model.pt", "finetune_last_layers/run.json", "finetune_last_layers/state.pt",
           "learning_curves.png", "metrics.json", "report.html", "report.md"]


# Two processes sum each step's gradient in another order than one process: float rounding, not a different
# training. Measured on the ants and bees (2 + 2 epochs): the curves agree far inside this.
FINETUNE_LOSS_TOLERANCE = 1e-3


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TL_ADVISE_", "MLFLOW_"))}
    return {**env, "OMP_NUM_THREADS": "1"}


def _tl_advise(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tl_advise.cli", *(str(a) for a in args)]


def _torchrun(*args: str | Path) -> list[str]:
    # The documented form: `--` keeps torchrun's parser off the script's options (--run vs --run-path).
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "tl_advise.cli", "--", *(str(a) for a in args)]


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _comparable(report: dict[str, Any]) -> list[Any]:
    return [(r["strategy"], r["status"], r["best_epoch"], r["val"],
             [(c["phase"], c["epoch"], c["train_loss"], c["val_loss"], c["val_accuracy"]) for c in r["curves"]])
            for r in report["run"]["runs"]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same run in two processes (cold cache: the processes embed their shards) and then in one."""
    data = shared_dataset("hymenoptera")
    base = tmp_path_factory.mktemp("ddp")
    cache = base / "cache"
    two = subprocess.run(_tl_advise(data, "--cache-dir", cache, "--output-dir", base / "two", "--nproc-per-node", "2",
                                    *RUN_ARGS), capture_output=True, text=True, env=_env(), timeout=900, check=False)
    assert two.returncode == 0, two.stderr
    one = subprocess.run(_tl_advise(data, "--cache-dir", cache, "--output-dir", base / "one", *RUN_ARGS),
                         capture_output=True, text=True, env=_env(), timeout=900, check=False)
    assert one.returncode == 0, one.stderr
    return {"data": data, "base": base, "cache": cache, "two": json.loads(two.stdout), "two_err": two.stderr,
            "one": json.loads(one.stdout), "one_err": one.stderr}


@pytest.mark.slow
@pytest.mark.shared
def test_two_processes_measure_what_one_does(runs: dict[str, Any]) -> None:
    one = {r["strategy"]: r for r in runs["one"]["run"]["runs"]}
    two = {r["strategy"]: r for r in runs["two"]["run"]["runs"]}
    assert runs["one"]["recommendation"] == runs["two"]["recommendation"]
    for strategy in one:
        n_val = one[strategy]["settings"]["n_val"]
        assert two[strategy]["settings"]["n_val"] == n_val == 153  # every val image once, none padded
        assert abs(one[strategy]["val"]["accuracy"] - two[strategy]["val"]["accuracy"]) * n_val <= 1 + 1e-6, strategy
        settings = two[strategy]["settings"]
        assert (settings["world_size"], settings["batch_size_per_rank"], settings["effective_batch_size"]) == (2, 8, 16)
        assert settings["lr_scaling"].startswith("none")
        assert one[strategy]["settings"]["world_size"] == 1
    # The head on stored features: the same batches, batch statistics and dropout masks as one process.
    for a, b in zip(one["feature_extraction"]["curves"], two["feature_extraction"]["curves"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
        assert a["val_accuracy"] == b["val_accuracy"]
    # Fine-tuning, epoch by epoch: the same phases and epochs, the losses within what summing the gradient in
    # another order moves them (all-reduce), and the same validation accuracy at every epoch and at the end.
    curves_one, curves_two = one["finetune_last_layers"]["curves"], two["finetune_last_layers"]["curves"]
    assert [(c["phase"], c["epoch"]) for c in curves_one] == [(c["phase"], c["epoch"]) for c in curves_two] == \
        [("head", 1), ("head", 2), ("finetune", 3), ("finetune", 4)]
    for a, b in zip(curves_one, curves_two, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=FINETUNE_LOSS_TOLERANCE), a["epoch"]
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=FINETUNE_LOSS_TOLERANCE), a["epoch"]
        assert a["val_accuracy"] == b["val_accuracy"], a["epoch"]
    for strategy in one:
        assert one[strategy]["val"]["accuracy"] == two[strategy]["val"]["accuracy"], strategy


@pytest.mark.slow
@pytest.mark.shared
def test_two_processes_write_one_set_of_files_and_fill_the_cache(runs: dict[str, Any]) -> None:
    assert _files(runs["base"] / "two") == ONE_SET == _files(runs["base"] / "one")
    # Rank 0 wrote rank 1's embeddings too: the one-process run after it embedded nothing.
    assert "80 train / 153 val images embedded" in runs["one_err"] and "(233 from the cache)" in runs["one_err"]
    # Rank 0 speaks for the run: the other rank's log lines are not repeated.
    assert runs["two_err"].count("feature_extraction head epoch 1 (1/2)") == 1
    assert runs["two"]["run"]["files"]["metrics"] == "metrics.json"


def _rank_pid(parent: int, rank: int) -> int | None:
    """The worker of ``rank`` among torchrun's children (its RANK environment variable)."""
    for child in Path("/proc").glob("[0-9]*"):
        try:
            if int((child / "stat").read_text().split()[3]) == parent and \
                    f"RANK={rank}".encode() in (child / "environ").read_bytes().split(b"\0"):
                return int(child.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_sigterm_to_one_rank_stops_both_and_resume_finishes_the_run(runs: dict[str, Any]) -> None:
    out = runs["base"] / "stopped"
    args = (runs["data"], "--cache-dir", runs["cache"], "--output-dir", out, *RUN_ARGS)
    state = out / "finetune_last_layers" / "state.pt"
    proc = subprocess.Popen(_torchrun(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_env())
    try:
        deadline = time.monotonic() + 600
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        worker = _rank_pid(proc.pid, 1)
        assert worker is not None and proc.poll() is None, "the run finished before a rank could be stopped"
        os.kill(worker, signal.SIGTERM)
        stopped_at = time.monotonic()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and time.monotonic() - stopped_at < 60  # both ranks ended, promptly
    assert "interrupted" in err and "internal error" not in err
    assert not [line for line in err.splitlines() if 'File "' in line and ("runners" in line or "advisor" in line)]
    saved = checkpoint.load(state)
    assert not saved["finished"] and len(saved["rng_by_rank"]) == 2
    assert not (out / "metrics.json").exists()

    resumed = subprocess.run(_tl_advise(*args, "--resume", "--nproc-per-node", "2"), capture_output=True, text=True,
                             env=_env(), timeout=900, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "feature_extraction: already completed" in resumed.stderr
    assert _comparable(json.loads(resumed.stdout)) == _comparable(runs["two"])
    assert _files(out) == ONE_SET
    shutil.rmtree(out)
