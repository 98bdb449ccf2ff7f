"""The ``tensorrt_api`` backend: builds an engine from ONNX with the TensorRT Python API and runs
it, following the rules of the library's major version (``tensorrt_plan``):

- 8.6: explicit-batch network flag; ``FP16``/``INT8`` builder flags; implicit INT8 through a
  calibrator that only hands TensorRT the cell's calibration cache; ``execute_v2``.
- 10.x: default (always explicit batch) network; Q/DQ graphs strongly typed;
  ``execute_async_v3`` with tensor addresses.
- 11.x: strongly typed only (no precision flags, no calibrators).

Per-layer precisions (the fallback policy's FP16 layers) set ``ILayer.precision`` and the
``OBEY_PRECISION_CONSTRAINTS`` flag. Dynamic inputs get one optimization profile from the
request's batch range; the workspace goes through the memory-pool limit; a timing cache is read
and written back. Written per cell: the engine, the builder's log, and the engine inspector's
per-layer JSON.

Runtime: deserialize, bind by tensor name, device buffers with cuda-python (``cuda.bindings``;
pycuda where that is what is installed), each input copied with the dtype the engine reports for
it (``FeedAdapter``: lossless casts are made and recorded, lossy ones fail).

Nothing here has run on real TensorRT in this repository: it is type-checked with mypy against
``tensorrt-stubs`` (10.x API) and tested through ``tests/trt_double.py``, which enforces the
API's contract for 8.6, 10 and 11.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from quantsweep.backends import Binding, FeedAdapter
from quantsweep.backends.tensorrt_plan import (
    BuildRequest,
    CommandError,
    Plan,
    graph_inputs,
    major,
    plan,
    profile_shapes,
)
from quantsweep.backends.trtexec import classify_errors
from quantsweep.job import ToolFailure

if TYPE_CHECKING:
    import tensorrt as trt


def available() -> tuple[bool, str]:
    try:
        import tensorrt
    except ImportError:
        return False, "TensorRT is not importable in this toolset (no GPU build here)"
    if not hasattr(tensorrt, "Builder"):  # e.g. only tensorrt-stubs' .pyi files installed
        where = list(getattr(tensorrt, "__path__", [])) or "tensorrt"
        return False, f"{where}: a tensorrt package without the library (type stubs only?)"
    return True, str(tensorrt.__version__)


def _logger(sink: list[str]) -> trt.ILogger:
    """A logger that keeps every message as ``[<severity letter>] <message>`` (trtexec's form,
    so ``trtexec.classify_errors`` reads it)."""
    import tensorrt as trt

    letters = {trt.ILogger.Severity.INTERNAL_ERROR: "F", trt.ILogger.Severity.ERROR: "E",
               trt.ILogger.Severity.WARNING: "W", trt.ILogger.Severity.INFO: "I",
               trt.ILogger.Severity.VERBOSE: "V"}

    class _Log(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            sink.append(f"[{letters.get(severity, '?')}] {msg}")

    return _Log()


CALIBRATORS = {"EntropyCalibration2": "IInt8EntropyCalibrator2",
               "EntropyCalibration": "IInt8EntropyCalibrator",
               "MinMaxCalibration": "IInt8MinMaxCalibrator",
               "LegacyCalibration": "IInt8LegacyCalibrator"}


def _cache_calibrator(cache_path: Path) -> trt.IInt8Calibrator:
    """A calibrator of the cache's own algorithm that hands TensorRT the cache and has no data:
    if TensorRT rejects the cache (header of another version), calibration fails with
    "no scaling factors detected" instead of calibrating on something else."""
    import tensorrt as trt

    from quantsweep import calib

    text = Path(cache_path).read_bytes()
    algorithm = calib.parse(text.decode(), str(cache_path)).algorithm
    if algorithm not in CALIBRATORS:
        raise ToolFailure("invalid_cache", f"{cache_path}: algorithm {algorithm!r} is none of "
                                           f"TensorRT's calibrators {list(CALIBRATORS)}")
    base = getattr(trt, CALIBRATORS[algorithm])

    class _FromCache(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            return None  # no data: the cache is all there is

        def read_calibration_cache(self) -> bytes:
            return text

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    calibrator: trt.IInt8Calibrator = _FromCache()
    return calibrator


class DataCalibrator:
    """TensorRT's INT8 calibration fed with data (quantizer ``trt-calibrator``): each
    ``get_batch`` copies one batch of feeds to the device, cast to the network input's dtype;
    the cache TensorRT writes is saved to ``cache_path``. ``trt`` is the ``IInt8Calibrator``."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], algorithm: str, cache_path: Path,
                 device: Device | None = None):
        import tensorrt as trt

        if algorithm not in CALIBRATORS:
            raise ToolFailure("invalid_config", f"calibration algorithm {algorithm!r} is none of "
                                                f"{list(CALIBRATORS)}")
        self.feeds, self.cache_path, self.batches = feeds, Path(cache_path), 0
        self.dev = device if device is not None else default_device()
        self.adapt: FeedAdapter | None = None
        self.buffers = DeviceBuffers(self.dev)
        owner = self
        base = getattr(trt, CALIBRATORS[algorithm])

        class _Calibrator(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                base.__init__(self)
                self._it = iter(owner.feeds)

            def get_batch_size(self) -> int:
                return 1

            def get_batch(self, names: list[str]) -> list[int] | None:
                batch = next(self._it, None)
                return None if batch is None else owner.to_device(batch, names)

            def read_calibration_cache(self) -> bytes | None:
                return None  # always calibrate on the data

            def write_calibration_cache(self, cache: bytes) -> None:
                _write_atomic(owner.cache_path, memoryview(cache))

        self.trt: trt.IInt8Calibrator = _Calibrator()

    def bind(self, inputs: list[tuple[str, np.dtype[Any]]]) -> None:
        self.adapt = FeedAdapter([Binding(n, dt.name, []) for n, dt in inputs])

    def to_device(self, batch: dict[str, np.ndarray], names: list[str]) -> list[int]:
        feeds = self.adapt(batch) if self.adapt else batch
        ptrs = [self.buffers.upload(name, np.ascontiguousarray(feeds[name])) for name in names]
        self.dev.sync()
        self.batches += 1
        return ptrs


def _fail(reason: str, message: str, log: list[str]) -> ToolFailure:
    errors = classify_errors(log)
    if errors:
        e = errors[0]
        return ToolFailure(e["class"], f"{message}: {e['detail']} ({e['meaning']})", e["detail"])
    last = [ln for ln in log if ln.startswith(("[E]", "[F]"))]
    return ToolFailure(reason, f"{message}" + (f": {last[-1]}" if last else ""))


def _write_atomic(path: Path, data: bytes | memoryview) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build(req: BuildRequest, log_path: Path, calibrator: DataCalibrator | None = None) -> dict[str, Any]:
    """Build ``req.engine`` from ``req.onnx``; the builder's messages go to ``log_path``.
    ToolFailure (classified from the log) when the parser or the builder fails. With
    ``calibrator`` (implicit INT8), TensorRT calibrates on its data and writes ``req.cache``."""
    import tensorrt as trt

    try:
        p = plan(req)
    except CommandError as exc:
        raise ToolFailure("unsupported_precision", str(exc)) from None
    have = major(trt.__version__)
    if have != p.major:
        raise ToolFailure("version_mismatch", f"the cell asks for TensorRT {req.trt_version}; this "
                                              f"toolset has TensorRT {trt.__version__}")
    log: list[str] = []
    t0 = time.monotonic()
    try:
        info = _build(req, p, log, calibrator)
    finally:
        log_path.write_text("\n".join(log) + "\n")
    info["build_s"] = round(time.monotonic() - t0, 3)
    return info


def _build(req: BuildRequest, p: Plan, log: list[str],
           calibrator: DataCalibrator | None = None) -> dict[str, Any]:
    import tensorrt as trt

    logger = _logger(log)
    builder = trt.Builder(logger)
    flags = 0
    if p.major < 10:  # 10+: every network is explicit batch (the flag is deprecated, then gone)
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if p.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(req.onnx)):
        for i in range(parser.num_errors):
            log.append(f"[E] [ONNX parser] {parser.get_error(i)}")
        raise _fail("parse_failed", f"the TensorRT ONNX parser rejected {req.onnx}", log)

    config = builder.create_builder_config()
    if req.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, req.workspace_mib << 20)
    if p.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if p.int8:
        config.set_flag(trt.BuilderFlag.INT8)
    if calibrator is not None:
        calibrator.bind([(network.get_input(i).name, np.dtype(trt.nptype(network.get_input(i).dtype)))
                         for i in range(network.num_inputs)])
        config.int8_calibrator = calibrator.trt
    elif p.calib_cache is not None:
        config.int8_calibrator = _cache_calibrator(p.calib_cache)
    if p.layer_precisions:
        _constrain_layers(network, p.layer_precisions, req.onnx)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)

    shapes = _profile(builder, config, req)
    timing = config.create_timing_cache(
        req.timing_cache.read_bytes() if req.timing_cache and req.timing_cache.exists() else b"")
    config.set_timing_cache(timing, False)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise _fail("build_failed", f"TensorRT {trt.__version__} could not build {req.onnx}", log)
    _write_atomic(req.engine, memoryview(serialized))
    if req.timing_cache:
        _write_atomic(req.timing_cache, memoryview(config.get_timing_cache().serialize()))

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(memoryview(serialized))
    layers: Any = None
    if engine is not None:
        inspector = engine.create_engine_inspector()
        layers = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        if req.layer_info:
            _write_atomic(req.layer_info, json.dumps(layers, indent=1).encode())
    return {"engine": str(req.engine), "tensorrt_version": str(trt.__version__),
            "flags": {"fp16": p.fp16, "int8": p.int8, "strongly_typed": p.strongly_typed,
                      "calibration_cache": str(p.calib_cache) if p.calib_cache else None},
            "layer_precisions": p.layer_precisions, "profile_shapes": shapes,
            "engine_bytes": req.engine.stat().st_size,
            "layers": len(layers["Layers"]) if isinstance(layers, dict) and "Layers" in layers else None}


def _constrain_layers(network: trt.INetworkDefinition, wanted: dict[str, str],
                      onnx: Path) -> None:
    import tensorrt as trt

    types = {"fp16": trt.DataType.HALF, "fp32": trt.DataType.FLOAT}
    found = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in wanted:
            layer.precision = types[wanted[layer.name]]
            found.add(layer.name)
    missing = sorted(set(wanted) - found)
    if missing:
        raise ToolFailure("invalid_config", f"layer precisions name {missing}, which are not layers "
                                            f"of the network parsed from {onnx}")


def _profile(builder: trt.Builder, config: trt.IBuilderConfig,
             req: BuildRequest) -> dict[str, Any]:
    import tensorrt as trt

    try:
        shapes = profile_shapes(graph_inputs(req.onnx), req)
    except CommandError as exc:
        raise ToolFailure("invalid_config", str(exc)) from None
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, trt.Dims(lo), trt.Dims(opt), trt.Dims(hi))
        config.add_optimization_profile(profile)
    return {k: [list(s) for s in v] for k, v in shapes.items()}


def _dims(d: trt.Dims) -> list[int]:
    return [int(d[i]) for i in range(len(d))]


# ---- runtime ---------------------------------------------------------------------------


class Device(Protocol):
    """Device memory and a stream: cuda-python or pycuda behind one interface."""

    name: str

    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def h2d(self, ptr: int, host: np.ndarray) -> None: ...
    def d2h(self, host: np.ndarray, ptr: int) -> None: ...
    def sync(self) -> None: ...
    @property
    def stream(self) -> int: ...


class CudaPython:
    """cuda-python's runtime API (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef]
        self.rt: Any = cudart
        self._stream = self._ok(cudart.cudaStreamCreate(), "cudaStreamCreate")
        prop = self._ok(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        raw = prop.name
        self.name = raw.split(b"\0", 1)[0].decode() if isinstance(raw, bytes) else str(raw)

    def _ok(self, ret: tuple[Any, ...], what: str) -> Any:
        err, *rest = ret  # every call returns (cudaError_t, *values)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"{what} failed: {err}")
        return rest[0] if len(rest) == 1 else None

    @property
    def stream(self) -> int:
        return int(self._stream)

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._ok(self.rt.cudaFree(ptr), "cudaFree")

    def h2d(self, ptr: int, host: np.ndarray) -> None:
        self._ok(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                         self._stream), "cudaMemcpyAsync H2D")

    def d2h(self, host: np.ndarray, ptr: int) -> None:
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                         self._stream), "cudaMemcpyAsync D2H")

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")


class PyCuda:
    """pycuda, accepted where it is what the host has."""

    def __init__(self) -> None:
        import pycuda.autoinit  # noqa: F401  (creates the context)
        import pycuda.driver as cuda

        self.cuda: Any = cuda
        self._stream = cuda.Stream()
        self.name = cuda.Device(0).name()
        self._allocs: dict[int, Any] = {}

    @property
    def stream(self) -> int:
        return int(self._stream.handle)

    def malloc(self, nbytes: int) -> int:
        a = self.cuda.mem_alloc(max(nbytes, 1))
        self._allocs[int(a)] = a
        return int(a)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def h2d(self, ptr: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(ptr, host, self._stream)

    def d2h(self, host: np.ndarray, ptr: int) -> None:
        self.cuda.memcpy_dtoh_async(host, ptr, self._stream)

    def sync(self) -> None:
        self._stream.synchronize()


def default_device() -> Device:
    try:
        return CudaPython()
    except ImportError:
        pass
    try:
        return PyCuda()
    except ImportError:
        raise ToolFailure("tool_missing", "neither cuda-python nor pycuda is installed in this "
                                          "toolset: TensorRT needs one to move data to the GPU") from None


@dataclass
class _Buffer:
    ptr: int
    nbytes: int


class DeviceBuffers:
    """One device allocation per tensor name, reallocated when a larger one is needed."""

    def __init__(self, dev: Device):
        self.dev = dev
        self._b: dict[str, _Buffer] = {}

    def get(self, name: str, nbytes: int) -> int:
        b = self._b.get(name)
        if b is None or b.nbytes < nbytes:
            if b is not None:
                self.dev.free(b.ptr)
            b = self._b[name] = _Buffer(self.dev.malloc(nbytes), nbytes)
        return b.ptr

    def ptr(self, name: str) -> int:
        return self._b[name].ptr

    def upload(self, name: str, host: np.ndarray) -> int:
        ptr = self.get(name, host.nbytes)
        self.dev.h2d(ptr, host)
        return ptr

    def free_all(self) -> None:
        for b in self._b.values():
            self.dev.free(b.ptr)
        self._b.clear()


class Runner:
    """Runs a serialized engine: ``infer(feeds) -> outputs`` by tensor name."""

    def __init__(self, engine_path: str | Path, options: dict[str, Any] | None = None,
                 device: Device | None = None):
        import tensorrt as trt

        self.log: list[str] = []
        self.runtime = trt.Runtime(_logger(self.log))
        data = Path(engine_path).read_bytes()
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise _fail("invalid_engine", f"{engine_path}: TensorRT {trt.__version__} could not "
                                          f"deserialize this engine", self.log)
        self.engine: trt.ICudaEngine = engine
        self.major = major(trt.__version__)
        self.context = engine.create_execution_context()
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in self.names
                            if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in self.names}
        self.inputs = [Binding(n, self.dtypes[n].name, _dims(engine.get_tensor_shape(n)))
                       for n in self.input_names]
        self.adapt = FeedAdapter(self.inputs)
        self.dev = device if device is not None else default_device()
        self.device = f"cuda:0 ({self.dev.name})"
        self.buffers = DeviceBuffers(self.dev)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self.adapt(feeds)  # each input in the dtype its binding has (seed 004)
        for name in self.input_names:
            x = np.ascontiguousarray(feeds[name])
            if not self.context.set_input_shape(name, tuple(x.shape)):
                raise ValueError(f"input {name!r}: shape {list(x.shape)} is outside the engine's "
                                 f"optimization profile")
            self.buffers.upload(name, x)
        outs = {}
        for name in self.names:
            if name in self.input_names:
                continue
            shape = tuple(_dims(self.context.get_tensor_shape(name)))
            outs[name] = np.empty(shape, dtype=self.dtypes[name])
            self.buffers.get(name, outs[name].nbytes)
        if self.major >= 10:
            for name in self.names:
                self.context.set_tensor_address(name, self.buffers.ptr(name))
            ok = self.context.execute_async_v3(self.dev.stream)
        else:  # 8.6: bindings in I/O-tensor order
            self.dev.sync()
            ok = self.context.execute_v2([self.buffers.ptr(n) for n in self.names])
        if not ok:
            raise RuntimeError("TensorRT execution failed: " + "; ".join(self.log[-3:]))
        for name, host in outs.items():
            self.dev.d2h(host, self.buffers.ptr(name))
        self.dev.sync()
        return outs

    def close(self) -> None:
        self.buffers.free_all()


def runner(artifact: str | Path, options: dict[str, Any]) -> Runner:
    return Runner(artifact, options)
