"""Report stage: results/report.html (self-contained, offline)."""
import sys

from quantsweep.report.html import main

sys.exit(main(sys.argv[1:]))
