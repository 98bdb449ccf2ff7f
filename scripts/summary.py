"""Summary stage: one row per cell of the matrix in results/summary.csv."""
import sys

from quantsweep.report.summary import main

sys.exit(main(sys.argv[1:]))
