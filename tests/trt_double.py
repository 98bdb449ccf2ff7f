"""A test double of the TensorRT Python API (``tensorrt``) and of cuda-python's runtime
(``cuda.bindings.runtime``), for 8.6, 10.x and 11.x, that enforces the real API's contract:

- members exist per version: what 10.0 removed (``Builder.build_engine``,
  ``IBuilderConfig.max_workspace_size``, ``ICudaEngine.num_bindings``/``get_binding_*``,
  ``IExecutionContext.execute_async_v2``) raises AttributeError on 10 and 11; what 11 removed
  (``BuilderFlag.FP16``/``INT8``, ``IBuilderConfig.int8_calibrator``, the ``IInt8*Calibrator``
  classes) raises AttributeError on 11; what 8.6 does not have yet (``STRONGLY_TYPED``,
  ``DataType.INT64``) is absent there. Unknown attributes cannot be set (pybind objects).
- arguments are type-checked like pybind11 does (enums, ILogger subclasses that called the base
  ``__init__``, ``Dims``/tuples of the right rank, int addresses and streams).
- behaviour that the code under test relies on: the ONNX parser needs an explicit-batch network
  on 8.6 and has no importer for ops outside the default domain; 8.6 turns INT64 graph inputs
  into INT32 bindings (field report 004); a Q/DQ graph needs the INT8 flag on 8.6; strongly typed
  networks refuse precision flags and layer precisions; implicit INT8 reads the calibrator's
  cache and uses it only when its header is exactly ``TRT-<this version's code>-<calibrator's
  algorithm>``, otherwise asks the calibrator for batches, and without data fails with
  "Calibration failure occurred with no scaling factors detected"; an engine deserializes only
  in the TensorRT version that built it, and a truncated one does not at all.
- execution is real arithmetic: the engine runs its ONNX graph on ONNX Runtime, reading inputs
  from (fake) device memory as the engine's binding dtypes and writing outputs back, so bytes
  copied with the wrong dtype give wrong results exactly as on a GPU.

``no_int8_kernel_for`` names layers for which the builder "could not find any implementation"
in INT8 (field report 003: a fused node on 8.6.1) unless their precision is constrained to FP16
or FP32 with OBEY_PRECISION_CONSTRAINTS.
"""

from __future__ import annotations

import ctypes
import json
import struct
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


def _code(version: str) -> str:
    major, minor, patch = (int(x) for x in (version.split(".") + ["0", "0"])[:3])
    return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)


class _Enum:
    def __init__(self, owner: str, name: str, value: int):
        self._owner, self.name, self.value = owner, name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"<{self._owner}.{self.name}: {self.value}>"


def _enum(name: str, members: dict[str, int]) -> type:
    cls = type(name, (), {})
    for k, v in members.items():
        setattr(cls, k, _Enum(name, k, v))
    cls.__members__ = {k: getattr(cls, k) for k in members}  # type: ignore[attr-defined]
    return cls


def _check(value: Any, kind: Any, what: str) -> None:
    if hasattr(kind, "__members__"):  # one of the enums: a member of that enum, nothing else
        ok = isinstance(value, _Enum) and any(value is m for m in kind.__members__.values())
    else:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool | _Enum))
    if not ok:
        raise TypeError(f"{what}(): incompatible function arguments: got {value!r}")


class _Strict:
    """pybind-like objects: no new attributes, and members the version removed are gone."""

    _fields: tuple[str, ...] = ()
    _removed: frozenset[str] = frozenset()

    def __getattribute__(self, name: str) -> Any:
        if name in type(self)._removed:
            raise AttributeError(f"'tensorrt.tensorrt.{type(self).__name__}' object has no "
                                 f"attribute '{name}'")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in type(self)._fields:
            if name in type(self)._removed:
                raise AttributeError(f"'tensorrt.tensorrt.{type(self).__name__}' object has no "
                                     f"attribute '{name}'")
            object.__setattr__(self, name, value)
            return
        raise AttributeError(f"'tensorrt.tensorrt.{type(self).__name__}' object has no attribute "
                             f"'{name}'")


REMOVED_IN_10 = {
    "Builder": {"build_engine", "max_batch_size"},
    "IBuilderConfig": {"max_workspace_size"},
    "ICudaEngine": {"num_bindings", "get_binding_name", "get_binding_index", "binding_is_input",
                    "get_binding_dtype", "get_binding_shape"},
    "IExecutionContext": {"execute_async_v2", "set_binding_shape"},
}
REMOVED_IN_11 = {"IBuilderConfig": {"int8_calibrator"}}


def make_tensorrt(version: str = "10.13.0.35", no_int8_kernel_for: tuple[str, ...] = ()) -> types.ModuleType:
    """A ``tensorrt`` module of the given version."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    own_code = _code(version)

    def removed(cls: str) -> frozenset[str]:
        out: set[str] = set()
        if major >= 10:
            out |= REMOVED_IN_10.get(cls, set())
        if major >= 11:
            out |= REMOVED_IN_11.get(cls, set())
        return frozenset(out)

    dtypes = {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5}
    if major >= 10:
        dtypes["INT64"] = 9
    DataType = _enum("DataType", dtypes)
    flags = {"FP16": 0, "INT8": 1, "OBEY_PRECISION_CONSTRAINTS": 9, "PREFER_PRECISION_CONSTRAINTS": 10,
             "TF32": 7}
    if major >= 11:
        del flags["FP16"], flags["INT8"]
    BuilderFlag = _enum("BuilderFlag", flags)
    net_flags = {"EXPLICIT_BATCH": 0}
    if major >= 10:
        net_flags["STRONGLY_TYPED"] = 1
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", net_flags)
    MemoryPoolType = _enum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    TensorIOMode = _enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    ProfilingVerbosity = _enum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})
    LayerInformationFormat = _enum("LayerInformationFormat", {"ONELINE": 0, "JSON": 1})
    CalibrationAlgoType = _enum("CalibrationAlgoType", {
        "LEGACY_CALIBRATION": 0, "ENTROPY_CALIBRATION": 1, "ENTROPY_CALIBRATION_2": 2,
        "MINMAX_CALIBRATION": 3})
    ALGO_NAMES = {"LEGACY_CALIBRATION": "LegacyCalibration", "ENTROPY_CALIBRATION": "EntropyCalibration",
                  "ENTROPY_CALIBRATION_2": "EntropyCalibration2", "MINMAX_CALIBRATION": "MinMaxCalibration"}
    NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
          "BOOL": np.bool_, "UINT8": np.uint8, "INT64": np.int64}

    def nptype(dt: Any) -> type:
        _check(dt, DataType, "nptype")
        return NP[dt.name]

    class Dims:
        def __init__(self, shape: Any = ()) -> None:
            if not all(isinstance(d, int | np.integer) for d in shape):
                raise TypeError(f"Dims(): incompatible function arguments: {shape!r}")
            self._d = [int(d) for d in shape]

        def __len__(self) -> int:
            return len(self._d)

        def __getitem__(self, i: int) -> int:
            return self._d[i]

        def __iter__(self) -> Iterator[int]:
            return iter(self._d)

        def __repr__(self) -> str:
            return f"({', '.join(map(str, self._d))})"

    def as_dims(x: Any, what: str) -> list[int]:
        if isinstance(x, Dims):
            return list(x._d)
        if isinstance(x, tuple | list) and all(isinstance(d, int) for d in x):
            return list(x)
        raise TypeError(f"{what}(): incompatible function arguments: {x!r} is not Dims")

    class ILogger:
        Severity = _enum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3,
                                      "VERBOSE": 4})

        def __init__(self) -> None:
            self._trt_init = True

        def _say(self, sev: str, msg: str) -> None:
            self.log(getattr(ILogger.Severity, sev), msg)  # type: ignore[attr-defined]

    def check_logger(logger: Any, what: str) -> None:
        if not isinstance(logger, ILogger) or not getattr(logger, "_trt_init", False):
            raise TypeError(f"{what}: incompatible constructor arguments (an ILogger whose "
                            f"ILogger.__init__ was called)")

    class IInt8Calibrator:
        def __init__(self) -> None:
            self._trt_init = True

    calibrators: dict[str, type] = {}
    for cls_name, algo in (("IInt8EntropyCalibrator2", "ENTROPY_CALIBRATION_2"),
                           ("IInt8EntropyCalibrator", "ENTROPY_CALIBRATION"),
                           ("IInt8MinMaxCalibrator", "MINMAX_CALIBRATION"),
                           ("IInt8LegacyCalibrator", "LEGACY_CALIBRATION")):
        calibrators[cls_name] = type(cls_name, (IInt8Calibrator,), {
            "get_algorithm": (lambda a: lambda self: getattr(CalibrationAlgoType, a))(algo)})

    class ITensor(_Strict):
        _fields = ("name", "shape", "dtype")

        def __init__(self, name: str, shape: list[int], dtype: Any):
            self.name, self.shape, self.dtype = name, Dims(shape), dtype

    class ILayer(_Strict):
        _fields = ("name", "type", "precision")

        def __init__(self, name: str, op: str, network: Any):
            self.name, self.type, self._precision, self._network = name, op, None, network

        @property
        def precision(self) -> Any:
            return self._precision if self._precision is not None else DataType.FLOAT

        @precision.setter
        def precision(self, dt: Any) -> None:
            _check(dt, DataType, "ILayer.precision")
            if self._network._strongly_typed:
                self._network._errors.append(f"Layer {self.name}: setting the precision of a layer "
                                             f"is not allowed in a strongly typed network")
            self._precision = dt

        @property
        def precision_is_set(self) -> bool:
            return self._precision is not None

    class INetworkDefinition(_Strict):
        _fields = ()

        def __init__(self, flags: int):
            self._explicit = major >= 10 or bool(flags & (1 << 0))
            self._strongly_typed = bool(flags & (1 << 1))
            self._inputs: list[Any] = []
            self._outputs: list[Any] = []
            self._layers: list[Any] = []
            self._errors: list[str] = []
            self._onnx: str | None = None
            self._qdq = False

        @property
        def num_layers(self) -> int:
            return len(self._layers)

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        def get_layer(self, i: int) -> Any:
            return self._layers[i]

        def get_input(self, i: int) -> Any:
            return self._inputs[i]

    class Builder(_Strict):
        _fields = ("max_threads",)
        _removed = removed("Builder")

        def __init__(self, logger: Any) -> None:
            check_logger(logger, "Builder.__init__")
            self._logger = logger

        def create_network(self, flags: int = 0) -> Any:
            _check(flags, int, "Builder.create_network")
            if major < 10 and flags & (1 << 1):
                raise ValueError("unknown NetworkDefinitionCreationFlag bit 1")
            return INetworkDefinition(flags)

        def create_builder_config(self) -> Any:
            return IBuilderConfig()

        def create_optimization_profile(self) -> Any:
            return IOptimizationProfile()

        def build_engine(self, network: Any, config: Any) -> Any:  # 8.x only
            return None

        max_batch_size = 1

        @property
        def platform_has_fast_int8(self) -> bool:
            return True

        def build_serialized_network(self, network: Any, config: Any) -> Any:
            _check(network, INetworkDefinition, "Builder.build_serialized_network")
            _check(config, IBuilderConfig, "Builder.build_serialized_network")
            err = self._validate(network, config)
            if err:
                self._logger._say("ERROR", err)
                return None
            inputs = [{"name": t.name, "dtype": t.dtype.name, "shape": list(t.shape)}
                      for t in network._inputs]
            outputs = [{"name": t.name, "dtype": t.dtype.name, "shape": list(t.shape)}
                       for t in network._outputs]
            layers = [{"Name": la.name, "LayerType": la.type,
                       "Precision": la.precision.name if la.precision_is_set else
                       ("INT8" if (config._flags & {"INT8"}) or network._qdq else "FLOAT")}
                      for la in network._layers]
            body = json.dumps({"version": version, "onnx": network._onnx, "inputs": inputs,
                               "outputs": outputs, "layers": layers,
                               "profiles": [p._shapes for p in config._profiles]}).encode()
            config._timing_cache._entries += len(layers)
            return IHostMemory(b"QSTRT" + struct.pack("<Q", len(body)) + body)

        def _calibrate(self, network: Any, config: Any, cal: Any, header: str) -> bool:
            """Feeds batches until get_batch returns None; amax of each input -> the cache."""
            names = [t.name for t in network._inputs]
            prof = config._profiles[0]._shapes if config._profiles else {}
            amax: dict[str, float] = {}
            batches = 0
            while (ptrs := cal.get_batch(names)) is not None:
                if len(ptrs) != len(names) or not all(isinstance(q, int) for q in ptrs):
                    raise TypeError("get_batch must return one device pointer (int) per input name")
                for t, ptr in zip(network._inputs, ptrs, strict=True):
                    shape = prof[t.name][1] if t.name in prof else list(t.shape)
                    dt = np.dtype(NP[t.dtype.name])
                    x = np.frombuffer(_DEVICE.read(ptr, int(np.prod(shape)) * dt.itemsize), dt)
                    amax[t.name] = max(amax.get(t.name, 0.0), float(np.abs(x).max()))
                batches += 1
            if not batches:
                return False
            lines = [header] + [f"{k}: {struct.pack('>f', v / 127.0).hex()}" for k, v in amax.items()]
            cal.write_calibration_cache(("\n".join(lines) + "\n").encode())
            return True

        def _validate(self, network: Any, config: Any) -> str | None:
            if network._onnx is None:
                return "Network has no inputs: nothing was parsed into it"
            if network._errors:
                return network._errors[0]
            weak = config._flags & {"FP16", "INT8"}
            if network._strongly_typed and weak:
                return (f"BuilderFlag {sorted(weak)} set on a strongly typed network: precisions "
                        f"come from the network")
            if network._qdq and not network._strongly_typed and "INT8" not in config._flags:
                return ("Error Code 4: Internal Error (Int8 precision has been set for a layer or "
                        "layer output, but int8 is not configured in the builder)")
            dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
            profiled = set().union(*[p._shapes for p in config._profiles]) if config._profiles else set()
            missing = [t.name for t in dynamic if t.name not in profiled]
            if missing:
                return (f"Error Code 4: Network has dynamic or shape inputs, but no optimization "
                        f"profile has been defined: {missing}")
            if "INT8" in config._flags and not network._qdq:
                cal = config._calibrator
                if cal is None:
                    return "Calibration failure occurred with no scaling factors detected."
                cache = cal.read_calibration_cache()
                header = bytes(cache).split(b"\n", 1)[0].decode(errors="replace").strip() if cache else ""
                want = f"TRT-{own_code}-{ALGO_NAMES[cal.get_algorithm().name]}"
                if header != want:
                    if header:
                        self._logger._say("WARNING", f"Calibration cache header {header!r} does not "
                                                     f"match {want!r}: ignoring the cache")
                    if not self._calibrate(network, config, cal, want):
                        return ("Error Code 2: Internal Error (Assertion ... Calibration failure "
                                "occurred with no scaling factors detected. This could be due to no "
                                "int8 calibrator or insufficient custom scales for network layers.)")
            if ("INT8" in config._flags or network._qdq):
                for la in network._layers:
                    if la.name in no_int8_kernel_for and not (
                            la.precision_is_set and "OBEY_PRECISION_CONSTRAINTS" in config._flags):
                        return (f"10: [optimizer.cpp::computeCosts::3869] Error Code 10: Internal "
                                f"Error (Could not find any implementation for node {la.name}.)")
            return None

    class IHostMemory(bytes):  # the real one exposes the buffer protocol
        @property
        def nbytes(self) -> int:
            return len(self)

    class ITimingCache(_Strict):
        def __init__(self, data: bytes):
            self._entries = int(data.decode() or 0) if data else 0

        def serialize(self) -> Any:
            return IHostMemory(str(self._entries).encode())

    class IOptimizationProfile(_Strict):
        def __init__(self) -> None:
            self._shapes: dict[str, list[list[int]]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            _check(input, str, "IOptimizationProfile.set_shape")
            lo, mid, hi = (as_dims(x, "IOptimizationProfile.set_shape") for x in (min, opt, max))
            if not (len(lo) == len(mid) == len(hi)) or any(
                    not (a <= b <= c) for a, b, c in zip(lo, mid, hi, strict=True)):
                raise ValueError(f"set_shape({input!r}): need min <= opt <= max of one rank")
            self._shapes[input] = [lo, mid, hi]

    class IBuilderConfig(_Strict):
        _fields = ("profiling_verbosity", "max_workspace_size", "int8_calibrator")
        _removed = removed("IBuilderConfig")

        def __init__(self) -> None:
            self._flags: set[str] = {"TF32"}
            self._pools: dict[str, int] = {}
            self._profiles: list[Any] = []
            self._timing_cache = ITimingCache(b"")
            self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY

        def set_flag(self, flag: Any) -> None:
            _check(flag, BuilderFlag, "IBuilderConfig.set_flag")
            self._flags.add(flag.name)

        def get_flag(self, flag: Any) -> bool:
            _check(flag, BuilderFlag, "IBuilderConfig.get_flag")
            return flag.name in self._flags

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            _check(pool, MemoryPoolType, "IBuilderConfig.set_memory_pool_limit")
            _check(pool_size, int, "IBuilderConfig.set_memory_pool_limit")
            self._pools[pool.name] = pool_size

        def add_optimization_profile(self, profile: Any) -> int:
            _check(profile, IOptimizationProfile, "IBuilderConfig.add_optimization_profile")
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache: Any) -> Any:
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            _check(cache, ITimingCache, "IBuilderConfig.set_timing_cache")
            _check(ignore_mismatch, bool, "IBuilderConfig.set_timing_cache")
            self._timing_cache = cache
            return True

        def get_timing_cache(self) -> Any:
            return self._timing_cache

        @property
        def _calibrator(self) -> Any:
            return self.__dict__.get("int8_calibrator")

        def __setattr__(self, name: str, value: Any) -> None:
            if name == "int8_calibrator" and "int8_calibrator" not in self._removed:
                if not isinstance(value, IInt8Calibrator) or not getattr(value, "_trt_init", False):
                    raise TypeError("int8_calibrator: incompatible type (an IInt8Calibrator "
                                    "subclass whose base __init__ was called)")
            if name == "profiling_verbosity":
                _check(value, ProfilingVerbosity, "IBuilderConfig.profiling_verbosity")
            super().__setattr__(name, value)

    class OnnxParser(_Strict):
        def __init__(self, network: Any, logger: Any) -> None:
            _check(network, INetworkDefinition, "OnnxParser.__init__")
            check_logger(logger, "OnnxParser.__init__")
            self._network = network
            self._errors: list[str] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> str:
            return self._errors[index]

        def parse_from_file(self, model: str) -> bool:
            _check(model, str, "OnnxParser.parse_from_file")
            import onnx

            net = self._network
            if not net._explicit:
                self._errors.append(
                    "ModelImporter.cpp:... Assertion failed: !mImporterCtx.network()->"
                    "hasImplicitBatchDimension() && \"This version of the ONNX parser only supports "
                    "TensorRT INetworkDefinitions with an explicit batch dimension. Please ensure "
                    "the network was created using the EXPLICIT_BATCH NetworkDefinitionCreationFlag.\"")
                return False
            try:
                m = onnx.load(model)
            except Exception as exc:  # the real parser: "Failed to parse ONNX model"
                self._errors.append(f"Failed to parse ONNX model from file {model}: {exc}")
                return False
            for node in m.graph.node:
                if node.domain not in ("", "ai.onnx"):
                    self._errors.append(f"While parsing node {node.name}: No importer registered "
                                        f"for op: {node.op_type}")
                    return False
            inits = {i.name for i in m.graph.initializer}
            types_ = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}

            def tensor(v: Any) -> Any:
                dt = types_[v.type.tensor_type.elem_type]
                if dt == "INT64" and major < 10:
                    dt = "INT32"  # 8.6 has no INT64 bindings: the parser casts them down
                shape = [d.dim_value if d.HasField("dim_value") else -1
                         for d in v.type.tensor_type.shape.dim]
                return ITensor(v.name, shape, getattr(DataType, dt))

            net._inputs = [tensor(v) for v in m.graph.input if v.name not in inits]
            net._outputs = [tensor(v) for v in m.graph.output]
            net._layers = [ILayer(n.name or f"{n.op_type}_{k}", n.op_type, net)
                           for k, n in enumerate(m.graph.node)]
            net._qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)
            net._onnx = model
            return True

    class Runtime(_Strict):
        def __init__(self, logger: Any) -> None:
            check_logger(logger, "Runtime.__init__")
            self._logger = logger

        def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
            data = bytes(serialized_engine)
            if data[:5] != b"QSTRT" or len(data) < 13:
                self._logger._say("ERROR", "1: [runtime.cpp::parsePlan::314] Error Code 1: "
                                           "Serialization (Serialization assertion plan->header.magicTag "
                                           "== rt::kPLAN_MAGIC_TAG failed.)")
                return None
            (size,) = struct.unpack("<Q", data[5:13])
            if len(data) - 13 != size:
                self._logger._say("ERROR", "1: [stdArchiveReader.cpp::StdArchiveReader::54] Error Code "
                                           "1: Serialization (Serialization assertion sizeRead == "
                                           "static_cast<uint64_t>(mEnd - mCurrent) failed.Size "
                                           "specified in header does not match archive size)")
                return None
            plan = json.loads(data[13:])
            if plan["version"] != version:
                self._logger._say("ERROR", f"6: The engine plan file is not compatible with this "
                                           f"version of TensorRT, expecting library version {version} "
                                           f"got {plan['version']}, please rebuild.")
                return None
            return ICudaEngine(plan)

    class EngineInspector(_Strict):
        def __init__(self, engine: Any):
            self._engine = engine

        def get_engine_information(self, format: Any) -> str:
            _check(format, LayerInformationFormat, "EngineInspector.get_engine_information")
            plan = self._engine._plan
            return json.dumps({"Layers": plan["layers"],
                               "Bindings": [t["name"] for t in plan["inputs"] + plan["outputs"]]})

    class ICudaEngine(_Strict):
        _removed = removed("ICudaEngine")

        def __init__(self, plan: dict[str, Any]):
            self._plan = plan
            self._io = {t["name"]: (t, TensorIOMode.INPUT) for t in plan["inputs"]}
            self._io.update({t["name"]: (t, TensorIOMode.OUTPUT) for t in plan["outputs"]})
            self._order = list(self._io)

        @property
        def num_io_tensors(self) -> int:
            return len(self._order)

        @property
        def num_bindings(self) -> int:  # 8.x only
            return len(self._order)

        def get_binding_index(self, name: str) -> int:  # 8.x only
            return self._order.index(name)

        def get_tensor_name(self, index: int) -> str:
            _check(index, int, "ICudaEngine.get_tensor_name")
            return self._order[index]

        def _t(self, name: str, what: str) -> Any:
            _check(name, str, what)
            if name not in self._io:
                raise KeyError(f"{what}: no tensor named {name!r}")
            return self._io[name]

        def get_tensor_mode(self, name: str) -> Any:
            return self._t(name, "ICudaEngine.get_tensor_mode")[1]

        def get_tensor_dtype(self, name: str) -> Any:
            return getattr(DataType, self._t(name, "ICudaEngine.get_tensor_dtype")[0]["dtype"])

        def get_tensor_shape(self, name: str) -> Any:
            return Dims(self._t(name, "ICudaEngine.get_tensor_shape")[0]["shape"])

        def create_execution_context(self) -> Any:
            return IExecutionContext(self)

        def create_engine_inspector(self) -> Any:
            return EngineInspector(self)

    class IExecutionContext(_Strict):
        _removed = removed("IExecutionContext")

        def __init__(self, engine: Any):
            self._engine = engine
            self._shapes: dict[str, list[int]] = {}
            self._addr: dict[str, int] = {}
            self._out_shapes: dict[str, list[int]] = {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            t, mode = self._engine._t(name, "IExecutionContext.set_input_shape")
            dims = as_dims(shape, "IExecutionContext.set_input_shape")
            if mode is not TensorIOMode.INPUT:
                return False
            prof = next((p[name] for p in self._engine._plan["profiles"] if name in p), None)
            if len(dims) != len(t["shape"]) or any(
                    d != s for d, s in zip(dims, t["shape"], strict=True) if s >= 0):
                return False
            if prof and any(not (lo <= d <= hi) for d, lo, hi in zip(dims, prof[0], prof[2], strict=True)):
                return False
            self._shapes[name] = dims
            self._out_shapes.clear()
            return True

        def get_tensor_shape(self, name: str) -> Any:
            t, mode = self._engine._t(name, "IExecutionContext.get_tensor_shape")
            if mode is TensorIOMode.INPUT:
                return Dims(self._shapes.get(name, t["shape"]))
            if not self._out_shapes:
                outs = self._run({n: np.zeros(s, dtype=self._np(n)) for n, s in self._shapes.items()})
                self._out_shapes = {k: list(v.shape) for k, v in outs.items()}
            return Dims(self._out_shapes[name])

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self._engine._t(name, "IExecutionContext.set_tensor_address")
            _check(memory, int, "IExecutionContext.set_tensor_address")
            self._addr[name] = memory
            return True

        def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:  # 8.x only
            return self.execute_v2(bindings)

        def set_binding_shape(self, index: int, shape: Any) -> bool:  # 8.x only
            return self.set_input_shape(self._engine._order[index], shape)

        def _np(self, name: str) -> Any:
            return NP[self._engine._io[name][0]["dtype"]]

        def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            import onnxruntime as ort

            sess = _session(ort, self._engine._plan["onnx"])
            want = {i.name: i.type for i in sess.get_inputs()}
            cast = {n: x.astype(np.int64) if want[n] == "tensor(int64)" else x
                    for n, x in feeds.items()}
            names = [o["name"] for o in self._engine._plan["outputs"]]
            return {n: np.asarray(v).astype(self._np(n))
                    for n, v in zip(names, sess.run(names, cast), strict=True)}

        def _execute(self, addr: dict[str, int]) -> bool:
            plan = self._engine._plan
            missing = [t["name"] for t in plan["inputs"] + plan["outputs"] if t["name"] not in addr]
            unset = [t["name"] for t in plan["inputs"] if t["name"] not in self._shapes]
            if missing or unset:
                return False
            feeds = {}
            for t in plan["inputs"]:
                n = t["name"]
                dt = np.dtype(self._np(n))
                count = int(np.prod(self._shapes[n]))
                feeds[n] = np.frombuffer(_DEVICE.read(addr[n], count * dt.itemsize), dtype=dt).reshape(
                    self._shapes[n])
            for n, v in self._run(feeds).items():
                _DEVICE.write(addr[n], np.ascontiguousarray(v).tobytes())
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            _check(stream_handle, int, "IExecutionContext.execute_async_v3")
            return self._execute(self._addr)

        def execute_v2(self, bindings: list[int]) -> bool:
            if not isinstance(bindings, list) or not all(isinstance(b, int) for b in bindings):
                raise TypeError("execute_v2(): incompatible function arguments: list[int]")
            if len(bindings) != len(self._engine._order):
                return False
            return self._execute(dict(zip(self._engine._order, bindings, strict=True)))

    for name, obj in dict(locals()).items():
        if name in ("DataType", "BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType",
                    "TensorIOMode", "ProfilingVerbosity", "LayerInformationFormat",
                    "CalibrationAlgoType", "Dims", "ILogger", "IInt8Calibrator", "ITensor", "ILayer",
                    "INetworkDefinition", "Builder", "IHostMemory", "ITimingCache",
                    "IOptimizationProfile", "IBuilderConfig", "OnnxParser", "Runtime",
                    "EngineInspector", "ICudaEngine", "IExecutionContext", "nptype"):
            setattr(trt, name, obj)
    trt.Logger = ILogger  # type: ignore[attr-defined]
    if major < 11:  # 11 removed the calibrators with implicit INT8
        for cls_name, cls in calibrators.items():
            setattr(trt, cls_name, cls)
    return trt


_SESSIONS: dict[str, Any] = {}


def _session(ort: Any, path: str) -> Any:
    if path not in _SESSIONS:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        _SESSIONS[path] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return _SESSIONS[path]


# ---- cuda-python's runtime API -----------------------------------------------------------


class _Device:
    """Device memory: allocations by address; reads and writes checked against their bounds."""

    def __init__(self) -> None:
        self.mem: dict[int, bytearray] = {}
        self.next = 0x7F0000000000

    def malloc(self, n: int) -> int:
        ptr = self.next
        self.mem[ptr] = bytearray(n)
        self.next += (n + 255) // 256 * 256 + 256
        return ptr

    def _find(self, ptr: int, n: int) -> tuple[bytearray, int]:
        for base, buf in self.mem.items():
            if base <= ptr < base + len(buf):
                if ptr + n > base + len(buf):
                    raise MemoryError(f"device access of {n} bytes at {ptr:#x} runs past its "
                                      f"allocation of {len(buf)} bytes")
                return buf, ptr - base
        raise MemoryError(f"{ptr:#x} is not device memory")

    def read(self, ptr: int, n: int) -> bytes:
        buf, off = self._find(ptr, n)
        return bytes(buf[off:off + n])

    def write(self, ptr: int, data: bytes) -> None:
        buf, off = self._find(ptr, len(data))
        buf[off:off + len(data)] = data


_DEVICE = _Device()


def make_cudart() -> types.ModuleType:
    rt = types.ModuleType("cuda.bindings.runtime")
    cudaError_t = _enum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInvalidValue": 1,
                                        "cudaErrorMemoryAllocation": 2})
    cudaMemcpyKind = _enum("cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1,
                                              "cudaMemcpyDeviceToHost": 2})
    ok = cudaError_t.cudaSuccess  # type: ignore[attr-defined]
    streams: set[int] = set()

    class cudaStream_t:
        def __init__(self, h: int):
            self.h = h

        def __int__(self) -> int:
            return self.h

    class cudaDeviceProp:
        name = b"Test Double GPU\x00\x00\x00"

    def cudaStreamCreate() -> tuple[Any, Any]:
        s = cudaStream_t(len(streams) + 1)
        streams.add(s.h)
        return ok, s

    def cudaGetDeviceProperties(device: int) -> tuple[Any, Any]:
        return ok, cudaDeviceProp()

    def cudaMalloc(size: int) -> tuple[Any, int]:
        _check(size, int, "cudaMalloc")
        return ok, _DEVICE.malloc(size)

    def cudaFree(ptr: int) -> tuple[Any]:
        if _DEVICE.mem.pop(ptr, None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)  # type: ignore[attr-defined]
        return (ok,)

    def cudaMemcpyAsync(dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple[Any]:
        if not isinstance(stream, cudaStream_t) or stream.h not in streams:
            raise TypeError("cudaMemcpyAsync(): stream must be a cudaStream_t")
        _check(kind, cudaMemcpyKind, "cudaMemcpyAsync")
        if kind is cudaMemcpyKind.cudaMemcpyHostToDevice:  # type: ignore[attr-defined]
            _DEVICE.write(dst, ctypes.string_at(src, count))
        else:
            data = _DEVICE.read(src, count)
            ctypes.memmove(dst, data, count)
        return (ok,)

    def cudaStreamSynchronize(stream: Any) -> tuple[Any]:
        if not isinstance(stream, cudaStream_t) or stream.h not in streams:
            raise TypeError("cudaStreamSynchronize(): stream must be a cudaStream_t")
        return (ok,)

    for name, obj in dict(locals()).items():
        if name.startswith("cuda"):
            setattr(rt, name, obj)
    return rt


@contextmanager
def installed(version: str = "10.13.0.35", **kw: Any) -> Iterator[types.ModuleType]:
    """``import tensorrt`` and ``from cuda.bindings import runtime`` give the doubles inside."""
    trt = make_tensorrt(version, **kw)
    rt = make_cudart()
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.__path__ = []  # type: ignore[attr-defined]
    bindings.__path__ = []  # type: ignore[attr-defined]
    bindings.runtime = rt  # type: ignore[attr-defined]
    cuda.bindings = bindings  # type: ignore[attr-defined]
    mods = {"tensorrt": trt, "cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt}
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        yield trt
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        _SESSIONS.clear()

