"""Reproduce every table and figure of the five papers behind this suite.

    bash run_all.sh                 # every unfinished run, then results/tables, results/figures, results/README.md
    bash run_all.sh --smoke         # every table's pipeline on tiny offline data, CPU, minutes
    bash run_all.sh --only pml_table4 --jobs 2
    bash run_all.sh --slurm         # writes results/slurm/run_all.sbatch (one array task per unfinished run)

- reproduce/registry.py   every table and figure: datasets, methods (script + flags), seeds, and the
                          papers' own numbers typed in beside them, with their source table;
- reproduce/__main__.py   the runner: plans runs, skips finished ones (metrics.json present), runs the rest
                          N at a time over the visible GPUs, or writes a SLURM job-array script;
- reproduce/aggregate.py  mean +- std over seeds, Delta-m% and Mean Rank (common.metrics), the paper's number
                          beside ours in each cell, results/tables/*.md, results/figures/*.png, results/README.md;
- reproduce/tiny_data.py  tiny real-format datasets for the smoke run.
"""
