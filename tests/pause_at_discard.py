"""Run ``fairgptq`` with the deletion of a replaced run stopped at its last step (tests only).

``python tests/pause_at_discard.py PAUSE_FILE fairgptq-arguments...``: when the run reaches the
deletion of the old run's trash folder it writes its pid to PAUSE_FILE and sleeps, so the test can
SIGKILL it at exactly that moment.  The hook is a monkeypatch here, not a switch in the product.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from fairgptq import cli
from fairgptq.pipeline import rundir


def _paused(trash: Path) -> None:
    Path(sys.argv[1]).write_text(str(os.getpid()))
    time.sleep(600)


if __name__ == "__main__":
    rundir._delete_trash = _paused
    sys.exit(cli.main(sys.argv[2:]))
