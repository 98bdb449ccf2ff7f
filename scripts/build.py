"""Build stage (runs under the toolset's interpreter): see quantsweep.backends.build.run."""
from quantsweep.backends.build import run
from quantsweep.job import main

main(run)
