"""trtexec on the TensorRT double, for a hand-off bundle's ``run.sh``: it reads its command line as
trtexec of the cell's version does (an option that version lacks is an error: 11 removed
``--int8``, ``--fp16``, ``--best`` and ``--calib``), builds the engine with the double (ONNX
parser, builder flags, optimization profile, a calibrator that hands over ``--calib``'s cache),
times it, and prints trtexec's log: device information, "Engine built in", the performance
summary, and ``&&&& PASSED``/``FAILED``. It knows nothing of quantsweep."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _version  # noqa: E402
import trt_double  # noqa: E402

VALUED = {"--onnx", "--saveEngine", "--minShapes", "--optShapes", "--maxShapes", "--calib",
          "--precisionConstraints", "--layerPrecisions", "--memPoolSize", "--timingCacheFile",
          "--profilingVerbosity", "--exportLayerInfo", "--exportProfile", "--iterations"}
SWITCHES = {"--fp16", "--int8", "--best", "--stronglyTyped"}
REMOVED_IN_11 = {"--int8", "--fp16", "--best", "--calib"}
ALGORITHMS = {"EntropyCalibration2": "IInt8EntropyCalibrator2", "EntropyCalibration": "IInt8EntropyCalibrator",
              "MinMaxCalibration": "IInt8MinMaxCalibrator", "LegacyCalibration": "IInt8LegacyCalibrator"}


def _shapes(text: str) -> dict[str, list[int]]:
    out = {}
    for part in text.split(","):
        name, _, dims = part.rpartition(":")
        out[name] = [int(d) for d in dims.split("x")]
    return out


def _stat(label: str, ms: list[float]) -> str:
    q = np.percentile(ms, [90, 95, 99])
    return (f"[I] {label}: min = {min(ms):.6g} ms, max = {max(ms):.6g} ms, mean = {statistics.mean(ms):.6g} ms, "
            f"median = {statistics.median(ms):.6g} ms, percentile(90%) = {q[0]:.6g} ms, "
            f"percentile(95%) = {q[1]:.6g} ms, percentile(99%) = {q[2]:.6g} ms")


def run(argv: list[str], say: Any) -> bool:
    version = _version.version()
    major = int(version.split(".")[0])
    trt = trt_double.make_tensorrt(version)
    opts: dict[str, str] = {}
    switches: set[str] = set()
    for a in argv:
        key, eq, value = a.partition("=")
        if (major >= 11 and key in REMOVED_IN_11) or key not in VALUED | SWITCHES or (key in VALUED) != bool(eq):
            say(f"[E] Unknown option: {a}")
            return False
        if eq:
            opts[key] = value
        else:
            switches.add(key)
    say("[I] === Device Information ===")
    say("[I] Selected Device: Test Double GPU")
    say(f"[I] TensorRT version: {'.'.join(version.split('.')[:3])}")

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            say(f"[{severity.name[0]}] [TRT] {msg}")

    logger = Logger()
    builder = trt.Builder(logger)
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if "--stronglyTyped" in switches:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    say("[I] Start parsing network model.")
    if "--onnx" not in opts or not parser.parse_from_file(opts["--onnx"]):
        for i in range(parser.num_errors):
            say(f"[E] [TRT] ModelImporter.cpp: {parser.get_error(i)}")
        say(f"[E] Failed to parse onnx file {opts.get('--onnx')}")
        return False
    config = builder.create_builder_config()
    for sw, flag in (("--fp16", "FP16"), ("--int8", "INT8")):
        if sw in switches:
            config.set_flag(getattr(trt.BuilderFlag, flag))
    if "--calib" in opts:
        text = Path(opts["--calib"]).read_bytes()
        algorithm = text.decode().splitlines()[0].strip().split("-", 2)[-1]
        base = getattr(trt, ALGORITHMS.get(algorithm, "IInt8EntropyCalibrator2"))

        class FromCache(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                base.__init__(self)

            def get_batch_size(self) -> int:
                return 1

            def get_batch(self, names: list[str]) -> None:
                return None

            def read_calibration_cache(self) -> bytes:
                return text

            def write_calibration_cache(self, cache: bytes) -> None:
                return None

        config.int8_calibrator = FromCache()
    if "--minShapes" in opts:
        lo, opt, hi = (_shapes(opts[k]) for k in ("--minShapes", "--optShapes", "--maxShapes"))
        profile = builder.create_optimization_profile()
        for name in lo:
            profile.set_shape(name, trt.Dims(lo[name]), trt.Dims(opt[name]), trt.Dims(hi[name]))
        config.add_optimization_profile(profile)
    t0 = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        say("[E] Engine could not be created from network")
        return False
    say(f"[I] Engine built in {time.monotonic() - t0:.3f} sec.")
    Path(opts["--saveEngine"]).write_bytes(bytes(serialized))
    return _time(trt, logger, bytes(serialized), _shapes(opts["--optShapes"]) if "--optShapes" in opts else {},
                 major, say, int(opts.get("--iterations", "20")))


def _time(trt: Any, logger: Any, plan: bytes, opt: dict[str, list[int]], major: int, say: Any,
          iterations: int) -> bool:
    """Runs the engine on zeros of its optimization profile's shapes; trtexec's summary."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    dev = trt_double._DEVICE
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    addr = {}
    for n in names:
        if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT:
            shape = opt.get(n) or list(engine.get_tensor_shape(n))
            ctx.set_input_shape(n, shape)
            x = np.zeros(shape, trt.nptype(engine.get_tensor_dtype(n)))
            addr[n] = dev.malloc(x.nbytes)
            dev.write(addr[n], x.tobytes())
    for n in names:
        if n not in addr:
            shape = list(ctx.get_tensor_shape(n))
            addr[n] = dev.malloc(int(np.prod(shape)) * np.dtype(trt.nptype(engine.get_tensor_dtype(n))).itemsize)
    ms = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        if major >= 10:
            for n in names:
                ctx.set_tensor_address(n, addr[n])
            ok = ctx.execute_async_v3(1)
        else:
            ok = ctx.execute_v2([addr[n] for n in names])
        if not ok:
            say("[E] Error occurred during inference")
            return False
        ms.append((time.perf_counter() - t0) * 1000)
    say("[I] === Performance summary ===")
    say(f"[I] Throughput: {1000 / statistics.mean(ms):.6g} qps")
    say(_stat("Latency", ms))
    say(_stat("GPU Compute Time", ms))
    return True


def main(argv: list[str]) -> int:
    code = trt_double._code(_version.version())
    line = "trtexec " + " ".join(argv)
    print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # {line}", flush=True)

    def say(msg: str) -> None:
        print(f"[{time.strftime('%m/%d/%Y-%H:%M:%S')}] {msg}", flush=True)

    ok = run(argv, say)
    print(f"&&&& {'PASSED' if ok else 'FAILED'} TensorRT.trtexec [TensorRT v{code}] # {line}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
