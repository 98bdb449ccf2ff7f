"""Train the embedded demo detector (runs under the demo toolset's interpreter)."""
from quantsweep.demo.train import run
from quantsweep.job import main

main(run)
