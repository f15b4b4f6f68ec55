"""benchmarks/gpu_check.sh and bench_gpu.py stop at once, clearly, where no CUDA device is visible.

``CUDA_VISIBLE_DEVICES=""`` hides every GPU, so this holds on a GPU machine too. What the scripts measure
on a GPU can only be checked there (see benchmarks/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, make_class_folder


@pytest.fixture
def no_gpu_env() -> dict[str, str]:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}


@pytest.fixture
def split_dataset(tmp_path: Path) -> Path:
    make_class_folder(tmp_path / "data" / "train", {"a": 2, "b": 2})
    make_class_folder(tmp_path / "data" / "val", {"a": 1, "b": 1}, seed=1)
    return tmp_path / "data"


@pytest.mark.slow
def test_gpu_check_fails_fast_without_cuda(no_gpu_env: dict[str, str], split_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env={**no_gpu_env, "DATA": str(split_dataset), "OUT": str(out)}, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "gpu_check: no CUDA device is visible" in done.stderr and "sees no CUDA device" in done.stderr
    assert done.stdout == "" and not out.exists(), "nothing is run or written before the check"


def test_gpu_check_names_a_missing_dataset(no_gpu_env: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env={**no_gpu_env, "DATA": str(tmp_path / "nowhere")}, timeout=60, check=False)
    assert done.returncode == 2
    assert f"{tmp_path / 'nowhere'} has no train/ and val/ folders" in done.stderr


@pytest.mark.slow
def test_bench_gpu_fails_fast_without_cuda(no_gpu_env: dict[str, str], split_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_gpu.py"), "--data", str(split_dataset),
                           "--out", str(out)], capture_output=True, text=True, env=no_gpu_env, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert "bench_gpu: no CUDA device is visible" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
