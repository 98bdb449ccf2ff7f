"""Latency stage (runs under the toolset's interpreter): see quantsweep.latency.run."""
from quantsweep.job import main
from quantsweep.latency import run

main(run)
