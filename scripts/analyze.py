"""Analyze stage (runs under quantsweep's interpreter): see quantsweep.analyze.run."""
from quantsweep.analyze import run
from quantsweep.job import main

main(run)
