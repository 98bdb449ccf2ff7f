"""Framework-model stage (runs under the toolset's interpreter): builds the demo model in its
framework from the trained weights; see quantsweep.demo.framework.run."""
from quantsweep.demo.framework import run
from quantsweep.job import main

main(run)
