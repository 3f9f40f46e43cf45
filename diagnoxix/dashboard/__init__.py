"""The staff dashboard under `/dashboard/`: server-rendered pages, a staff-only live socket.

`setup.setup_dashboard(app)` mounts it. This package's `__init__` imports nothing, so `keys` can
name the dashboard's state type without pulling the web layer (or itself) in.
"""
