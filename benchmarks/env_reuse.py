"""Re-creating an unchanged toolset env vs creating it the first time (target <= 0.1x)."""
import tempfile
import time

from quantsweep.toolsets import ensure_env

spec = {"packages": ["onnx==1.17.0", "onnxruntime==1.20.1", "numpy<2"]}
with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    first = ensure_env("bench", spec, d)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    again = ensure_env("bench", spec, d)
    t_again = time.perf_counter() - t
assert first.status == again.status == "ok" and not again.created
print(f"first: {t_first:.2f} s   reuse: {t_again:.2f} s   ratio {t_again / t_first:.3f}x (target <= 0.1x)")
print("note: 'first' uses uv's warm package cache when one exists; from an empty cache it is slower")
