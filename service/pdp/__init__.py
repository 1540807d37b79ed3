"""cedar-pdp: a Cedar authorization policy decision point served over gRPC."""

__version__ = "0.1.0"
