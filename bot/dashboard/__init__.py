"""The App Home dashboard's engine side: what production looks like now, and who is watching it.

- ``state``: the frozen values a front renders (``Dashboard``, ``EnvironmentState``…);
- ``reader``: reads them, and a cheap fingerprint of them, from the database;
- ``viewers``: who opened the home tab, and the debounced claim of who to publish to;
- ``refresh``: the loop that republishes when the fingerprint changes (any replica's change).
"""

from bot.dashboard.reader import DashboardReader
from bot.dashboard.refresh import DashboardRefresher, Publish
from bot.dashboard.state import (
    Dashboard,
    EnvironmentState,
    PendingCheck,
    RunningVersion,
    RunSummary,
    WatchedDeploy,
)
from bot.dashboard.viewers import HomeViewers

__all__ = ["Dashboard", "DashboardReader", "DashboardRefresher", "EnvironmentState",
           "HomeViewers", "PendingCheck", "Publish", "RunSummary", "RunningVersion",
           "WatchedDeploy"]
