"""Shared plumbing for every ordermesh process: settings, logging, the Postgres pool,
migrations, the gRPC server bootstrap, interceptors and token verification."""
