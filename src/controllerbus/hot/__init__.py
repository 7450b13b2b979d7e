"""Hot reload: one process from a saved source file to the new code serving.

:class:`HotReloader` compiles plugin projects in-process, watches exactly the
files the compiler's dependency graph names, rebuilds the plugin whose inputs
changed and switches generations through the loader; :class:`Handoff` carries
controllers' ``snapshot()``/``restore(state)`` across. See ``docs/hot.md``.
"""

from controllerbus._watch import WatchError
from controllerbus.hot.handoff import Handoff, HandoffStats
from controllerbus.hot.session import HotReloader, ReloadEvent
from controllerbus.hot.targets import HotTarget
from controllerbus.hot.watcher import BatchWatcher

__all__ = [
    "BatchWatcher",
    "Handoff",
    "HandoffStats",
    "HotReloader",
    "HotTarget",
    "ReloadEvent",
    "WatchError",
]
