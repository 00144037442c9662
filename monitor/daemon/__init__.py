"""The daemon: when services are probed (scheduling), probing them (runner), and what their results become.

Writers only: scheduling, runner, recording, states, rollups, retention. Pages and /metrics read
through `monitor.readers`.
"""
