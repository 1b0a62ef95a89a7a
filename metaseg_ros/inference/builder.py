"""Building a PerceptionPipeline from settings: the one place where checkpoints are looked
up, the backend is chosen (and falls back), and torch's global state (threads, seed) is set.

The node, replay, evaluation and the demo all build their pipeline here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from metaseg_ros.inference.artifacts import ARTIFACT_SUFFIXES, ExportSettings
from metaseg_ros.inference.autotune import choose_backend
from metaseg_ros.inference.engine import ENGINE_SUFFIX, describe_engine
from metaseg_ros.inference.export import (
    CachedArtifact,
    build_tensorrt_artifact,
    ensure_artifact,
    tensorrt_settings,
)
from metaseg_ros.inference.pipeline import PerceptionPipeline, PipelineInfo
from metaseg_ros.inference.plugin import plugin_pipeline
from metaseg_ros.inference.runner import (
    BackendUnavailableError,
    ModelRunner,
    RunnerOptions,
    check_device,
)
from metaseg_ros.inference.runners.compiled import CompiledRunner
from metaseg_ros.inference.runners.eager import CudaGraphRunner, EagerRunner
from metaseg_ros.inference.runners.fallback import Fallback, FallbackRunner
from metaseg_ros.inference.runners.onnxruntime import OnnxRuntimeRunner, import_onnxruntime
from metaseg_ros.inference.runners.program import ExportedProgramRunner
from metaseg_ros.inference.runners.tensorrt import TensorRTRunner, import_torch_tensorrt
from metaseg_ros.inference.runners.tensorrt_engine import (
    TensorRTEngineRunner,
    build_engine,
    import_tensorrt,
    runtime_facts,
)
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import ModelSettings, PipelineSettings
from metaseg_ros.model.checkpoint import load_checkpoint
from metaseg_ros.model.config import get_config
from metaseg_ros.model.metasegmenter import MetaSegmenter
from metaseg_ros.settings import BACKENDS
from metaseg_ros.tracking import Tracker

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
# Which artifact each exporting backend runs.
BACKEND_ARTIFACTS = {"onnxruntime": "onnx", "exported": "pt2", "tensorrt": "tensorrt"}

Log = Callable[[str], None]


def shipped_checkpoint(config_name: str) -> Path | None:
    """The checkpoint shipped in the package for a config ("tiny"), if there is one."""
    path = WEIGHTS_DIR / f"metaseg_{config_name.replace('-', '_')}.safetensors"
    return path if path.is_file() else None


def create_pipeline(settings: PipelineSettings, log: Log = print,
                    first_track_id: int = 1) -> PerceptionPipeline:
    """Segmenter and tracker as configured, joined into one pipeline.

    first_track_id: where track ids start (a pipeline rebuilt in the same process continues
    the previous one's ids, so that none is ever reused)."""
    if settings.model.segmenter:
        return plugin_pipeline(settings, first_track_id)

    def fell_back(backend: str, reason: str) -> None:  # called by the runner, later
        segmenter.restart_memory()
        pipeline.backend_fell_back(backend, reason)

    segmenter, info = create_segmenter(settings, log=log, on_fallback=fell_back)
    tracker = Tracker(settings.tracker, class_names=segmenter.class_names,
                      first_track_id=first_track_id)
    pipeline = PerceptionPipeline(segmenter, tracker, info,
                                  set_postprocess=segmenter.set_postprocess)
    return pipeline


def create_segmenter(settings: PipelineSettings, log: Log = print,
                     on_fallback: Callable[[str, str], None] | None = None
                     ) -> tuple[StreamingSegmenter, PipelineInfo]:
    """Load the configured checkpoint (or the shipped one) on the configured backend.

    A checkpoint path ending in .onnx, .pt2 or .ep is a ready-made export (metaseg-export)
    and runs as it is on the matching backend (onnxruntime, exported, tensorrt). With
    backend 'auto', a failed export falls back to eager (logged). With fallback_backend
    'eager', a backend that fails while running is replaced by eager PyTorch
    (runners/fallback.py; `on_fallback(backend, reason)` is told).
    """
    model_settings = settings.model
    if model_settings.num_threads > 0:
        torch.set_num_threads(model_settings.num_threads)
    options = RunnerOptions(num_threads=model_settings.num_threads,
                            precision=model_settings.precision)
    checkpoint = Path(model_settings.checkpoint) if model_settings.checkpoint else \
        shipped_checkpoint(model_settings.model_config)
    if checkpoint is not None and is_artifact_path(checkpoint):
        runner = runner_from_artifact(checkpoint, model_settings.backend, model_settings.device,
                                      options)
        backend, source = artifact_backend(checkpoint), f"export {checkpoint}"
        # Described at the precision the artifact holds (float32 accepts any).
        model_settings = dataclasses.replace(
            model_settings, precision=artifact_precision(runner) or model_settings.precision)
    else:
        if checkpoint is not None:
            model, source = load_checkpoint(checkpoint), f"checkpoint {checkpoint}"
        else:
            torch.manual_seed(0)  # the same random weights in every process
            model, source = MetaSegmenter(get_config(model_settings.model_config)), \
                "random weights"
        runner, backend = _runner_with_fallback(model.eval(), model_settings, options,
                                                str(checkpoint or f"random-{model.config.name}"),
                                                log)
        fallbacks = _fallback_chain(model, backend, model_settings)
        if fallbacks:
            runner = FallbackRunner(runner, backend, fallbacks, log=log, on_switch=on_fallback)
    info = _describe(runner, model_settings, backend, source, random=checkpoint is None)
    log(info.description)
    return StreamingSegmenter(runner, settings.postprocess), info


def _runner_with_fallback(model: MetaSegmenter, settings: ModelSettings,
                          options: RunnerOptions, cache_key: str, log: Log
                          ) -> tuple[ModelRunner, str]:
    """The configured backend's runner; for 'auto' the fastest candidate measured here
    (inference/autotune.py), or the only one."""
    if settings.backend != "auto":
        return create_runner(model, settings.backend, settings.device, cache_key=cache_key,
                             log=log, options=options), settings.backend
    candidates = auto_candidates(settings.device, settings.precision)
    if len(candidates) == 1:
        return create_runner(model, candidates[0], settings.device, cache_key=cache_key,
                             log=log, options=options), candidates[0]
    def make(name: str) -> ModelRunner:
        return create_runner(model, name, settings.device, cache_key=cache_key, log=log,
                             options=options)

    decision, runner = choose_backend(model, settings.device, settings.precision, candidates,
                                      make, cache_dir=options.cache_dir, log=log)
    if runner is None:  # decided earlier on this machine
        try:
            runner = make(decision.backend)
        except Exception as error:  # it ran then: measure again rather than stop here
            log(f"backend auto: the cached choice {decision.backend} cannot start now "
                f"({type(error).__name__}: {error}); measuring again")
            decision, runner = choose_backend(model, settings.device, settings.precision,
                                              candidates, make, cache_dir=options.cache_dir,
                                              log=log, remeasure=True)
    return runner, decision.backend


def _fallback_chain(model: MetaSegmenter, backend: str, settings: ModelSettings
                    ) -> list[Fallback]:
    """Eager on the configured device (unless that is what runs), then eager on the CPU."""
    if settings.fallback_backend == "none":
        return []
    chain: list[Fallback] = []
    if backend != "eager":
        chain.append((f"eager/{settings.device}",
                      partial(EagerRunner, model, settings.device, precision="float32")))
    if settings.device != "cpu":
        chain.append(("eager/cpu", partial(EagerRunner, model, "cpu")))
    return chain


def _describe(runner: ModelRunner, settings: ModelSettings, backend: str, source: str,
              random: bool) -> PipelineInfo:
    config = runner.config
    chosen = f"{backend} (auto)" if settings.backend == "auto" else backend
    if settings.precision != "float32":
        chosen += f" {settings.precision}"
    description = (f"MetaSegmenter {config.name} ({source}) on {chosen}/{settings.device}, "
                   f"input {config.image_size[1]}x{config.image_size[0]}, memory of "
                   f"{config.memory_frames} frames")
    return PipelineInfo(description, backend=backend, precision=settings.precision,
                        device=settings.device, random_weights=random)


def create_runner(model: MetaSegmenter, backend: str, device: str, cache_key: str = "",
                  log: Log = print, options: RunnerOptions | None = None) -> ModelRunner:
    """A runner for `backend` (one of BACKENDS) on `device`.

    Exporting backends reuse the cached artifact of this model and export once otherwise;
    `cache_key` labels the cached file (the checkpoint's path or name), the content
    fingerprint decides reuse.
    """
    options = options or RunnerOptions()
    if backend not in BACKENDS:
        raise ValueError(f"backend '{backend}' is not available (available: "
                         f"{', '.join(BACKENDS)})")
    if options.precision == "int8" and (backend != "onnxruntime" or device != "cpu"):
        raise ValueError(f"precision 'int8' runs on backend 'onnxruntime' on the cpu only "
                         f"(ONNX Runtime's int8 matrix products), not on '{backend}'/{device}")
    if backend == "eager":
        return EagerRunner(model, device, precision=options.precision)
    if backend == "cudagraph":
        return CudaGraphRunner(model, device, precision=options.precision)
    if backend == "compiled":
        return CompiledRunner(model, device, precision=options.precision, log=log)
    if backend == "tensorrt_engine":
        return _engine_runner(model, device, cache_key, options, log)
    if options.precision not in ("float32", "int8"):
        raise ValueError(f"precision {options.precision!r} applies to backends 'eager', "
                         f"'cudagraph' and 'compiled' only (backend '{backend}' has its own)")
    if backend == "onnxruntime":
        import_onnxruntime(device)  # fail before a long export
        onnx_settings = ExportSettings("onnx", precision=options.precision)
        return _cached_runner(
            partial(ensure_artifact, model, onnx_settings, cache_key, options.cache_dir, log),
            lambda path: OnnxRuntimeRunner(path, device, options.num_threads,
                                           options.spin_wait), log)
    if backend == "exported":
        check_device(backend, device)  # fail before a long export
        return _cached_runner(
            partial(ensure_artifact, model, ExportSettings("pt2", device=device), cache_key,
                    options.cache_dir, log),
            lambda path: ExportedProgramRunner(path, device), log)
    torch_tensorrt = import_torch_tensorrt(device)
    return _cached_runner(
        partial(ensure_artifact, model, tensorrt_settings(device), cache_key, options.cache_dir,
                log, writer=partial(build_tensorrt_artifact, torch_tensorrt=torch_tensorrt)),
        lambda path: TensorRTRunner(path, torch_tensorrt), log)


def _engine_runner(model: MetaSegmenter, device: str, cache_key: str, options: RunnerOptions,
                   log: Log) -> ModelRunner:
    """tensorrt_engine from a checkpoint: the cached ONNX export, built into an engine once
    (with its sidecar) by TensorRT's builder at the precision setting (float32 or float16)."""
    if options.precision not in ("float32", "float16"):
        raise ValueError(f"backend 'tensorrt_engine' builds float32 or float16 engines, not "
                         f"{options.precision!r}")
    tensorrt = import_tensorrt(device)  # fail before a long export
    onnx = ensure_artifact(model, ExportSettings("onnx"), cache_key, options.cache_dir, log)
    engine = onnx.path.with_name(f"{onnx.path.stem}-{options.precision}{ENGINE_SUFFIX}")
    if not engine.is_file():
        log(f"building TensorRT engine {engine} ({options.precision}); once per export and "
            "TensorRT version")
        build_engine(onnx.path, engine, options.precision, tensorrt)
        describe_engine(engine, onnx.path, options.precision, runtime_facts(tensorrt))
    return TensorRTEngineRunner(engine, tensorrt, precision=options.precision)


def _cached_runner(ensure: Callable[[], CachedArtifact], load: Callable[[Path], ModelRunner],
                   log: Log) -> ModelRunner:
    """Load the cached artifact; one found in the cache that cannot be loaded (a truncated
    or corrupted file) is removed and exported again, never trusted."""
    artifact = ensure()
    try:
        return load(artifact.path)
    except Exception as error:
        if artifact.created:
            raise
        log(f"cached artifact {artifact.path} cannot be loaded ({type(error).__name__}: "
            f"{error}); exporting it again")
        artifact.path.unlink(missing_ok=True)
    return load(ensure().path)


def auto_candidates(device: str, precision: str = "float32") -> list[str]:
    """The backends `auto` measures on `device`, eager first (the parity reference).

    CPU: eager, and ONNX Runtime when it is installed and the precision is float32 (a reduced
    precision is an eager setting; compiling takes a minute or more on a small CPU, so
    `compiled` runs there only when asked for). CUDA: eager, its CUDA graph and the compiled
    step, plus Torch-TensorRT when it can be imported at float32 (it builds its own float16
    engine). int8: ONNX Runtime alone (its outputs are not eager's, so there is nothing to
    compare or choose).
    """
    if precision == "int8":
        return ["onnxruntime"]
    if device == "cuda":
        candidates = ["eager", "cudagraph", "compiled"]
        if precision == "float32":
            try:
                import_torch_tensorrt(device)
                candidates.append("tensorrt")
            except BackendUnavailableError:
                pass
        return candidates
    if precision == "float32":
        try:
            import_onnxruntime(device)
            return ["eager", "onnxruntime"]
        except BackendUnavailableError:
            pass
    return ["eager"]


def artifact_backend(path: str | Path) -> str:
    """The backend that runs a ready-made artifact file, from its suffix."""
    suffix = Path(path).suffix
    if suffix == ENGINE_SUFFIX:
        return "tensorrt_engine"
    for backend, kind in BACKEND_ARTIFACTS.items():
        if ARTIFACT_SUFFIXES[kind] == suffix:
            return backend
    raise ValueError(f"{path}: not an artifact ({', '.join(ARTIFACT_SUFFIXES.values())}, "
                     f"{ENGINE_SUFFIX})")


def artifact_precision(runner: ModelRunner) -> str | None:
    """The precision an artifact's runner was exported at (None when it does not say)."""
    description = getattr(runner, "description", None)
    settings = getattr(description, "settings", None)
    return getattr(settings, "precision", None) or getattr(description, "precision", None)


def is_artifact_path(path: str | Path) -> bool:
    """Whether a path names an exported artifact (.onnx, .pt2, .ep) or a TensorRT engine
    (.engine) rather than a checkpoint."""
    return Path(path).suffix in (*ARTIFACT_SUFFIXES.values(), ENGINE_SUFFIX)


def runner_from_artifact(path: str | Path, backend: str, device: str,
                         options: RunnerOptions | None = None) -> ModelRunner:
    """A runner for a ready-made artifact (e.g. shipped with the robot), no export needed."""
    options = options or RunnerOptions()
    needed = artifact_backend(path)
    backend = needed if backend == "auto" else backend
    if backend != needed:
        raise ValueError(f"{path} runs on backend '{needed}', not '{backend}'")
    if backend == "onnxruntime":
        runner = OnnxRuntimeRunner(path, device, options.num_threads, options.spin_wait)
        held, asked = runner.description.settings.precision, options.precision
        if asked not in ("float32", held):  # float32 (the default) accepts any
            raise ValueError(f"{path} holds the step at precision {held}, not {asked} (write "
                             f"one with metaseg-export --onnx-precision {asked})")
        return runner
    if backend == "exported":
        return ExportedProgramRunner(path, device)
    if backend == "tensorrt_engine":  # float32 (the default) accepts an engine of any precision
        precision = None if options.precision == "float32" else options.precision
        return TensorRTEngineRunner(path, import_tensorrt(device), precision=precision)
    return TensorRTRunner(path, import_torch_tensorrt(device))
