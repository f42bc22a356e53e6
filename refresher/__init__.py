"""token-refresher: keeps a pod's service-account token valid while it drains."""

__version__ = "0.1.0"
