"""The serving runtime: data plane, repository, batcher, gRPC and HTTP transports (no torch)."""
