"""Quantize stage (runs under the toolset's interpreter): see quantsweep.quantize.run."""
from quantsweep.job import main
from quantsweep.quantize import run

main(run)
