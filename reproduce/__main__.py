"""`python -m reproduce [flags]` = `bash run_all.sh [flags]` (see reproduce/run.py)."""
import sys

from reproduce.run import main

sys.exit(main())
