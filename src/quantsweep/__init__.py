"""quantsweep: sweep INT8 deployment chains for detection models over tool-version matrices.

The core imports nothing heavy at module level: stage scripts run under each toolset's own
interpreter, which may lack pandas, PyYAML or even onnx.
"""

__version__ = "0.1.0"
