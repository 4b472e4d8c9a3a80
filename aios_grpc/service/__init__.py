"""gRPC transport: the BlockService servicer, health and reflection."""
