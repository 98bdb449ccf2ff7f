"""Toolset stage: create (once) or reuse the toolset's env; write versions.txt and status."""
import json
import sys

from quantsweep.toolsets import write_toolset_outputs

name, spec, out_dir, envs_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
rec = write_toolset_outputs(name, spec, out_dir, envs_dir)
print(f"toolset {name}: {rec['status']} {rec['message'][:300]}")
