"""The embedded local stack: a moto server on 127.0.0.1, the stack's resources, and the worker loop."""
