"""DRANET: a Kubernetes network driver (DRA + NRI) in Python."""

__version__ = "0.1.0"
