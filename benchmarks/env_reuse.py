"""Re-creating an unchanged toolset env vs creating it the first time (target <= 0.1x).

Each call runs in a fresh process, as the `toolset` rule does; the first creation uses an
empty uv cache (a fresh machine), so it includes uv's downloads."""
import os
import subprocess
import sys
import tempfile
import time

CODE = ("import sys; from quantsweep.toolsets import ensure_env; "
        "r = ensure_env('bench', {'packages': ['onnx==1.17.0', 'onnxruntime==1.20.1', 'numpy<2']}, "
        "sys.argv[1]); print(r.status, r.created)")


def timed(envs: str, env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CODE, envs], capture_output=True, text=True,
                         check=True, env=env).stdout.strip()
    return time.perf_counter() - t, out


with tempfile.TemporaryDirectory() as envs, tempfile.TemporaryDirectory() as cache:
    env = {**os.environ, "UV_CACHE_DIR": cache}
    t_first, first = timed(envs, env)
    t_again, again = timed(envs, env)
assert first == "ok True" and again == "ok False", (first, again)
print(f"first (empty uv cache): {t_first:.2f} s   reuse: {t_again:.2f} s   "
      f"ratio {t_again / t_first:.3f}x (target <= 0.1x)")
