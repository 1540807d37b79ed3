"""The entity store: roles, memberships and attributes held by the PDP (issue 9).

`api` is the interface; `sqlite` (the embedded default) and `postgres` (a store shared by
replicas) implement it; `validate` checks writes against a tenant's schema.
"""
