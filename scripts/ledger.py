"""Ledger stage: results/ledger.json and ledger.csv from the summary and the cells' graphs."""
import sys

from quantsweep.report.ledger import main

sys.exit(main(sys.argv[1:]))
