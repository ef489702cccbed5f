#!/usr/bin/env bash
# Reproduce every table and figure of the five papers, with the paper's numbers beside ours.
#
#   bash run_all.sh                      # every unfinished run, then results/tables/*.md, results/figures/*.png, results/README.md
#   bash run_all.sh --smoke --jobs 2     # every table's pipeline on tiny offline data, CPU (results/smoke/)
#   bash run_all.sh --only pml_table4    # one table (or a paper: --only pml; a pattern: --only 'pml_figure*')
#   bash run_all.sh --jobs 4             # 4 runs at once, spread over the visible GPUs
#   bash run_all.sh --slurm              # write results/slurm/: one job array per dependency wave and submit.sh
#   bash results/slurm/submit.sh         #   submit them in order; then: bash run_all.sh --no-run (the tables)
#   bash run_all.sh --list               # the plan: every run, its state and its tables; what data would enable the rest
#
# Finished runs (metrics.json present) are reused; interrupted ones resume from their checkpoint.
# Everything is in reproduce/ (registry.py: what the papers report and what we run; run.py: the runner;
# aggregate.py: the tables and figures). `bash run_all.sh --help` lists every flag.
set -euo pipefail
cd "$(dirname "$0")"
export MPLBACKEND=Agg
exec "${PYTHON:-python3}" -m reproduce "$@"
