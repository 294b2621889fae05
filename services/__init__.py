"""ordermesh gRPC services: one package per bounded context plus shared plumbing."""
