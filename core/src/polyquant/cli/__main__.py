"""``python -m polyquant.cli``: the same as the ``polyquant`` console script."""

from __future__ import annotations

from polyquant.cli.main import main

if __name__ == "__main__":
    main()
