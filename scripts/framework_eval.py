"""Framework evaluation (runs under the toolset's interpreter): see quantsweep.evaluate.loop.run.
COCO scoring then runs in quantsweep's own env (quantsweep.stage post hook)."""
from quantsweep.evaluate.loop import run
from quantsweep.job import main

main(run)
