"""Privacy beyond "the data stays home": DP-SGD at the sites (:mod:`.dp_sgd`), central DP on
the server of a federation (:mod:`.central`), their accounting (:mod:`.accounting`), and a
check of whether relay's generators replay training images (:mod:`.replay_leak`).

Where results go, under a run's ``results/`` folder: :data:`SITES_DIR` holds one privacy
ledger per site trained with DP-SGD, :data:`CENTRAL_FILE` the server's central-DP accounting.
"""

from __future__ import annotations

SITES_DIR = "privacy/sites"
"""The sites' DP-SGD ledgers, under the run's ``results/``."""

CENTRAL_FILE = "privacy/central.json"
"""The server's central-DP accounting, under the run's ``results/``."""
