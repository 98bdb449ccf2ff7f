"""Export stage (runs under the toolset's interpreter): see quantsweep.export.run."""
from quantsweep.export import run
from quantsweep.job import main

main(run)
