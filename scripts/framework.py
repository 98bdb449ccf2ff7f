"""Framework-model stage (runs under the toolset's interpreter): the model in its framework, as
its source builds it; see quantsweep.sources."""
from quantsweep.job import main
from quantsweep.sources import run_framework

main(run_framework)
