"""The gRPC adapter: the only package that imports grpc or the generated code."""
