"""Out-of-process plugins: a plugin's controllers in a child process, over a socket.

See ``docs/ipc.md``. :class:`~controllerbus.ipc.host.ProcessPlugin` is the host-side
entry point; ``python -m controllerbus.ipc.child`` is the child.
"""
