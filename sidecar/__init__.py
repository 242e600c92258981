"""bnn-sidecar: a binarized-neural-network flow scorer beside Zeek and Suricata."""

__version__ = "0.1.0"
