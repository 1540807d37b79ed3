"""The admin API: `AdminService` (servicer), who may call it (auth) and the audit log.

Importing this package imports no gRPC: `pdp.config` reads `identities` from it.
"""
