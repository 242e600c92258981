"""The long-running sidecar service (``bnn-sidecar run``): config → sources → scorer → sinks.

``registry`` maps config kinds to classes, ``pipeline`` is the data path,
``metrics`` the Prometheus endpoint, ``lifecycle`` builds a service from a config and
wires signals, ``follow_source`` is the followed-file source. See docs/SERVICE.md.
"""
