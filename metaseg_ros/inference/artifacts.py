"""Exported artifacts of the network's step: what they hold, where the cache keeps them,
and how they are read back safely (ONNX, torch.export .pt2, Torch-TensorRT programs).

Artifacts describe themselves: the MetaSegConfig (architecture, class names, input size) is
stored inside the ONNX file (a metadata property) or the .pt2 archive (an extra file), and
beside a Torch-TensorRT program (<file>.json), so a robot can ship the export alone.

Cached artifacts live in $METASEG_CACHE_DIR (default ~/.cache/metaseg_ros), named
``<label>-<kind>-<fingerprint>.<suffix>``. The fingerprint hashes the weights, the config,
the model's source code, the export settings and the exporter versions: a changed checkpoint,
config, model code or library version gives a new file; an unchanged one is reused.

Loading a .pt2 archive never unpickles: `check_program_archive` refuses archives holding
pickled payloads before torch.export.load sees them (torch.export.load would unpickle them).
Writing artifacts is inference/export.py's job.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from metaseg_ros.errors import ArtifactError  # re-exported: raised here
from metaseg_ros.model.config import MetaSegConfig, config_from_dict, config_to_dict
from metaseg_ros.model.export import DEFAULT_OPSET
from metaseg_ros.model.layers import SAMPLING_MODES
from metaseg_ros.model.metasegmenter import MetaSegmenter
from metaseg_ros.settings import DEVICES

CACHE_DIR_VARIABLE = "METASEG_CACHE_DIR"
ARTIFACT_FORMAT = "metaseg-artifact"
ARTIFACT_VERSION = 1
# ONNX metadata property and .pt2 extra file holding the artifact description (JSON).
DESCRIPTION_KEY = "metaseg_artifact"
PROGRAM_DESCRIPTION_FILE = "metaseg_artifact.json"
ARTIFACT_KINDS = ("onnx", "pt2", "tensorrt")
ARTIFACT_SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "tensorrt": ".ep"}
# The dtype of an export's weights and memory, by precision name. "int8" (ONNX only) is a
# float32 export whose matrix products with constant weights ONNX Runtime's dynamic
# quantisation then runs in int8 (inference/quantize.py).
EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int8": torch.float32}
MODEL_SOURCE_DIR = Path(__file__).resolve().parents[1] / "model"


@dataclass(frozen=True)
class ExportSettings:
    """How the step is exported.

    kind: "onnx", "pt2" (torch.export program) or "tensorrt" (Torch-TensorRT program).
    device: where the exported program runs ("cpu" or "cuda"; ONNX is device-independent).
    sampling: deformable-attention sampling ("gather" exports to plain Gather nodes).
    precision: "float32", or "float16" weights and memory (images stay float32), or "int8"
        (ONNX only: the float32 export with int8 matrix products, inference/quantize.py).
    opset: ONNX opset (ONNX only).
    """

    kind: str
    device: str = "cpu"
    sampling: str = "gather"
    precision: str = "float32"
    opset: int = DEFAULT_OPSET

    def __post_init__(self) -> None:
        if self.kind not in ARTIFACT_KINDS:
            raise ValueError(f"artifact kind {self.kind!r} not in {ARTIFACT_KINDS}")
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling {self.sampling!r} not in {SAMPLING_MODES}")
        if self.precision not in EXPORT_DTYPES:
            raise ValueError(f"precision {self.precision!r} not in {tuple(EXPORT_DTYPES)}")
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} must be one of {DEVICES}")
        if self.precision == "int8" and self.kind != "onnx":
            raise ValueError(f"precision 'int8' is an ONNX artifact's, not {self.kind!r}'s")

    @property
    def suffix(self) -> str:
        """File suffix of this kind of artifact."""
        return ARTIFACT_SUFFIXES[self.kind]

    @property
    def dtype(self) -> torch.dtype:
        """Torch dtype of the weights and memory."""
        return EXPORT_DTYPES[self.precision]


@dataclass(frozen=True)
class ArtifactDescription:
    """What an artifact holds: the model config, how it was exported, and its fingerprint."""

    config: MetaSegConfig
    settings: ExportSettings
    fingerprint: str

    def to_json(self) -> str:
        """JSON text stored in (or beside) the artifact."""
        return json.dumps({"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION,
                           "config": config_to_dict(self.config),
                           "settings": dataclasses.asdict(self.settings),
                           "fingerprint": self.fingerprint}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> ArtifactDescription:
        """Parse to_json's text; `source` names the artifact in errors."""
        try:
            document = json.loads(text)
            if document.get("format") != ARTIFACT_FORMAT:
                raise ArtifactError(f"{source}: not a {ARTIFACT_FORMAT} description")
            if document.get("version") != ARTIFACT_VERSION:
                raise ArtifactError(f"{source}: unsupported artifact version "
                                    f"{document.get('version')}")
            return cls(config_from_dict(document["config"]),
                       ExportSettings(**document["settings"]), str(document["fingerprint"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ArtifactError(f"{source}: malformed artifact description ({error})") from error


def default_cache_dir() -> Path:
    """$METASEG_CACHE_DIR, else ~/.cache/metaseg_ros."""
    configured = os.environ.get(CACHE_DIR_VARIABLE, "")
    return Path(configured).expanduser() if configured else \
        Path.home() / ".cache" / "metaseg_ros"


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict: names, dtypes, shapes and bytes (the weights' content)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def model_source_digest() -> str:
    """sha256 of the network's source files (converters excluded): code changes re-export."""
    digest = hashlib.sha256()
    for path in sorted(MODEL_SOURCE_DIR.rglob("*.py")):
        relative = path.relative_to(MODEL_SOURCE_DIR)
        if relative.parts[0] == "convert":
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def library_versions(kind: str, precision: str = "float32") -> dict[str, str]:
    """Versions of the libraries that shape an artifact of this kind (and precision: ONNX
    Runtime's quantiser writes the int8 ONNX files)."""
    versions = {"torch": torch.__version__}
    modules = {"onnx": ("onnx", "onnxscript"), "pt2": (), "tensorrt": ("torch_tensorrt",
                                                                      "tensorrt")}[kind]
    if precision == "int8":
        modules = (*modules, "onnxruntime")
    for name in modules:
        try:
            module = __import__(name)
            versions[name] = str(getattr(module, "__version__", "unknown"))
        except Exception:  # torch_tensorrt raises a plain Exception without libnvinfer
            versions[name] = "unavailable"
    if kind == "tensorrt" and torch.cuda.is_available():
        # Engines are specific to the GPU model they were built on.
        versions["gpu"] = torch.cuda.get_device_name()
        major, minor = torch.cuda.get_device_capability()
        versions["compute_capability"] = f"{major}.{minor}"
    return versions


def artifact_fingerprint(model: MetaSegmenter, settings: ExportSettings) -> str:
    """Hex digest identifying an export of `model` with `settings` (see module docstring)."""
    document = {"format": ARTIFACT_VERSION, "weights": weights_digest(model),
                "config": config_to_dict(model.config), "source": model_source_digest(),
                "settings": dataclasses.asdict(settings),
                "versions": library_versions(settings.kind, settings.precision)}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def artifact_label(text: str) -> str:
    """A short file-name-safe label ('checkpoints/r50-coco.safetensors' -> 'r50-coco')."""
    name = Path(text).name if text else ""
    for suffix in (".safetensors", ".json"):
        name = name.removesuffix(suffix)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return name[:64] or "model"


def cached_artifact_path(cache_dir: Path, label: str, settings: ExportSettings,
                         fingerprint: str) -> Path:
    """Where the cache keeps the artifact with this fingerprint."""
    return cache_dir / f"{artifact_label(label)}-{settings.kind}-{fingerprint[:24]}" \
                       f"{settings.suffix}"


@contextmanager
def atomic_destination(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, moved onto it when the block succeeds (so readers
    never see a half-written artifact, and concurrent writers leave one whole file).

    The writer creates the temporary file itself, with the usual permissions (umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
                               f"{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_onnx_description(path: str | Path) -> ArtifactDescription:
    """The description embedded in an ONNX artifact (reads the metadata only)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file {path} not found")
    try:
        # The metadata sits in the model proto; weights are loaded too (no partial parse).
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises several types
        raise ArtifactError(f"{path} is not a readable ONNX file: {error}") from error
    return description_from_metadata({p.key: p.value for p in model.metadata_props}, str(path))


def description_from_metadata(metadata: dict[str, str], source: str) -> ArtifactDescription:
    """Parse the description from ONNX metadata properties (session or proto)."""
    if DESCRIPTION_KEY not in metadata:
        raise ArtifactError(f"{source} carries no '{DESCRIPTION_KEY}' metadata: export it with "
                            "metaseg-export (or metaseg_ros.inference.export)")
    return ArtifactDescription.from_json(metadata[DESCRIPTION_KEY], source)


# Members a .pt2 archive of an exported program may hold (after the model-name folder).
_ALLOWED_ARCHIVE_MEMBERS = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[^/]+\.json|data/weights/[^/]+|data/constants/[^/]+"
    r"|data/sample_inputs/[^/]+\.pt|extra/[^/]+)")


def check_program_archive(path: str | Path) -> None:
    """Refuse a .pt2 archive that torch.export.load would unpickle (raises ArtifactError).

    Allowed: the serialized graph (JSON), weights and constants stored as raw tensor bytes
    (``use_pickle`` false), sample inputs that load with torch.load(weights_only=True), extra
    files. Refused: pickled weights or constants, custom or opaque objects, legacy pickled
    weight files, AOTInductor payloads and anything unknown.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise ArtifactError(f"{path} is not a .pt2 archive: {error}") from error
    with archive:
        names = archive.namelist()
        problems = []
        configs: dict[str, dict] = {}
        for name in names:
            member = name.split("/", 1)[1] if "/" in name else name
            if name.endswith("/"):
                continue
            if not _ALLOWED_ARCHIVE_MEMBERS.fullmatch(member):
                problems.append(f"unexpected member {member}")
            elif member.startswith(("data/weights/", "data/constants/")) \
                    and member.endswith("_config.json"):
                try:
                    configs[member] = json.loads(archive.read(name))["config"]
                except (ValueError, KeyError) as error:
                    problems.append(f"unreadable {member}: {error}")
        referenced = set()
        for member, entries in configs.items():
            folder = member.rsplit("/", 1)[0]
            for fqn, payload in entries.items():
                if payload.get("use_pickle", True):
                    problems.append(f"pickled payload {fqn} in {member}")
                if not str(payload.get("path_name", "")).startswith(("weight_", "tensor_")):
                    problems.append(f"non-tensor payload {fqn} ({payload.get('path_name')})")
                referenced.add(f"{folder}/{payload.get('path_name')}")
        for name in names:
            member = name.split("/", 1)[1] if "/" in name else name
            if member.startswith(("data/weights/", "data/constants/")) \
                    and not member.endswith("_config.json") and member not in referenced:
                problems.append(f"unreferenced payload {member}")
            if member.startswith("data/sample_inputs/"):
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception as error:  # any failure means: refuse
                    problems.append(f"sample inputs {member} need unpickling ({error})")
    if problems:
        raise ArtifactError(f"refusing to load {path}: " + "; ".join(problems))


def load_program_artifact(path: str | Path
                          ) -> tuple[torch.export.ExportedProgram, ArtifactDescription]:
    """Load a .pt2 artifact written by write_program_artifact (checked, never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"program file {path} not found")
    check_program_archive(path)
    extra = {PROGRAM_DESCRIPTION_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    if not extra[PROGRAM_DESCRIPTION_FILE]:
        raise ArtifactError(f"{path} carries no {PROGRAM_DESCRIPTION_FILE}: export it with "
                            "metaseg-export (or metaseg_ros.inference.export)")
    return program, ArtifactDescription.from_json(extra[PROGRAM_DESCRIPTION_FILE], str(path))


def sidecar_path(path: str | Path) -> Path:
    """<artifact>.json: the description beside an artifact that cannot embed it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar_description(path: str | Path) -> ArtifactDescription:
    """The description stored beside a Torch-TensorRT program."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise ArtifactError(f"{sidecar} not found (written beside {Path(path).name} by "
                            "metaseg-export --tensorrt)")
    return ArtifactDescription.from_json(sidecar.read_text(), str(sidecar))
