"""``python -m flashmm.native``: compile the core's kernels into the on-disk cache
(run at install time so that no user waits for it later)."""

from __future__ import annotations

import sys

from flashmm.native import warm

if __name__ == "__main__":
    sys.stdout.write(f"flashmm native core ready in {warm():.1f} s\n")
