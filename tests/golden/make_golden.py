"""Write the golden files (``tests/golden/data/<case>.json``) from the code as it is.

    python tests/golden/make_golden.py            # every case
    python tests/golden/make_golden.py minilm     # some

Run it only when numbers change on purpose (and say so in the commit and the README).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from cases import CASES, snapshot  # noqa: E402


def main(names: list[str]) -> None:
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for name in names or list(CASES):
            snap = snapshot(CASES[name](Path(work)), Path(work))
            (data / f"{name}.json").write_text(json.dumps(snap, indent=1, sort_keys=True, allow_nan=True) + "\n")
            print(name)


if __name__ == "__main__":
    main(sys.argv[1:])
