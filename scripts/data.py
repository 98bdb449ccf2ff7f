"""Data stage: generate the synthetic demo set or validate a COCO dataset; write its manifest."""
import json
import sys

from quantsweep.dataset import DatasetError, prepare

try:
    prepare(json.loads(sys.argv[1]), sys.argv[2])
except DatasetError as exc:
    sys.exit(f"dataset error: {exc}")
