"""The measuring helpers of benchmarks/_engine_bench.py: a child's own peak memory, import-time parsing and
the ``Image.reduce`` factor. What the benchmark measures is only checked by running it (benchmarks/README.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import _engine_bench as eb


@pytest.mark.slow
def test_child_peak_rss_is_its_own_not_the_parents(tmp_path: Path) -> None:
    # A child forked straight from this process would report at least this process's peak after exec.
    ballast = bytearray(400 * 2**20)
    ballast[::4096] = b"\1" * len(ballast[::4096])
    grow = "x = bytearray(150 * 2**20); x[::4096] = b'\\1' * len(x[::4096]); print('done')"
    child = eb.run_child([sys.executable, "-c", grow], cwd=tmp_path, env=dict(os.environ))
    assert (child.returncode, child.stdout) == (0, "done\n")
    assert 150 < child.peak_rss_mb < 350, child
    assert child.wall_s > 0 and child.cpu_s > 0
    del ballast


@pytest.mark.slow
def test_child_exit_code_and_time_limit(tmp_path: Path) -> None:
    failed = eb.run_child([sys.executable, "-c", "import sys; print('x', file=sys.stderr); sys.exit(3)"],
                          cwd=tmp_path, env=dict(os.environ))
    assert (failed.returncode, failed.stderr) == (3, "x\n")
    stopped = eb.run_child([sys.executable, "-c", "import time; time.sleep(30)"], cwd=tmp_path,
                           env=dict(os.environ), timeout_s=1)
    assert stopped.returncode == -9 and stopped.wall_s < 10


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |       numpy._core
import time:       200 |        300 |     numpy
import time:        50 |         50 |       scipy._lib
import time:       400 |        450 |     scipy
import time:      1000 |       1750 |   sklearn
import time:        10 |       1760 | tl_advise.advisor.measure.images.similarity
import time:        20 |         20 | numpy.linalg
import time:         5 |          5 | PIL
import time:        30 |         30 |   numpy.fft
import time:        70 |        100 | PIL.Image
import time:        40 |         40 |   onnxruntime.capi
import time:        60 |        100 | onnxruntime
some log line that is not an import
"""


def test_parse_importtime_sums_each_package_entered_from_outside() -> None:
    log = eb.parse_importtime(IMPORTTIME)
    assert log.total == pytest.approx((1760 + 20 + 5 + 100 + 100) / 1e6)
    assert log.package["sklearn"] == pytest.approx(1750 / 1e6)
    assert log.package["numpy"] == pytest.approx((300 + 20 + 30) / 1e6)  # not numpy._core again
    assert log.package["scipy"] == pytest.approx(450 / 1e6)
    assert log.package["PIL"] == pytest.approx((5 + 100) / 1e6)
    assert log.outermost["numpy"] == pytest.approx(20 / 1e6)
    assert log.outermost.get("sklearn", 0.0) == 0.0
    assert log.nested["numpy"] == "tl_advise.advisor.measure.images.similarity"
    assert log.nested["PIL"] == log.nested["onnxruntime"] == ""
    assert log.package["onnxruntime"] == pytest.approx(100 / 1e6)
    assert "torch" not in log.package


@pytest.mark.parametrize(("size", "k"), [((640, 480), 1), ((1024, 768), 3), ((512, 512), 2), ((200, 100), 1)])
def test_reduce_factor_keeps_the_shorter_side_at_least_the_resize_size(size: tuple[int, int], k: int) -> None:
    assert eb.reduce_factor(size, 256) == k
    assert -(-min(size) // k) >= min(256, min(size))  # Image.reduce rounds up
