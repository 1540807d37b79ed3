"""AdminService: reloads, status and the kill switch, over what the app exposes (`Target`).

Calls reach these methods only through `pdp.admin.guard` (authenticated, authorized,
audited); errors are typed (`pdp.errors`) and end the call with their status there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import grpc

from pdp import __version__
from pdp._proto.v1 import admin_pb2 as apb
from pdp._proto.v1 import admin_pb2_grpc as apb_grpc
from pdp._proto.v1 import authorization_pb2 as pb
from pdp._proto.v1 import value_pb2 as vpb
from pdp.admin.guard import CALLER
from pdp.errors import InvalidRequest, UnknownTenant
from pdp.kill_switch import Kill, KillSwitch, Scope, check_reason
from pdp.model import TENANT_NAME, BundleVersion, EntityRef
from pdp.reloader import TenantStatus

HEALTH = {True: apb.HEALTH_SERVING, False: apb.HEALTH_NOT_SERVING}


class Target(Protocol):
    """What the admin API acts on (`pdp.app.App`)."""

    kill_switch: KillSwitch

    def reload_now(self, tenants: set[str] | None) -> None:
        """Reload and wait until done (the served snapshot and health updated)."""

    def tenants(self) -> Mapping[str, TenantStatus]:
        """Every tenant with a bundle source or a served bundle, and its reload status."""

    def serving(self, tenant: str | None) -> bool:
        """What health answers for the tenant (None: the server as a whole)."""


class AdminServicer(apb_grpc.AdminServiceServicer):
    def __init__(self, target: Target) -> None:
        self._target = target

    def ReloadTenant(
        self, request: apb.ReloadTenantRequest, context: grpc.ServicerContext
    ) -> apb.ReloadTenantResponse:
        tenant = request.tenant
        if tenant and not TENANT_NAME.fullmatch(tenant):
            raise InvalidRequest("tenant", f"must match {TENANT_NAME.pattern}")
        if tenant and tenant not in self._target.tenants():
            raise UnknownTenant(tenant)
        self._target.reload_now({tenant} if tenant else None)
        statuses = self._target.tenants()
        names = [tenant] if tenant else sorted(statuses)
        return apb.ReloadTenantResponse(
            tenants=[_reload(t, statuses.get(t)) for t in names],
        )

    def GetStatus(
        self, request: apb.GetStatusRequest, context: grpc.ServicerContext
    ) -> apb.GetStatusResponse:
        target = self._target
        kills = target.kill_switch.active()
        tenants = []
        for name, st in sorted(target.tenants().items()):
            covering = [k for k in kills if k.scope.tenant in ("", name) and not k.scope.action]
            tenants.append(
                apb.TenantStatus(
                    tenant=name,
                    policy_version=_version(st.version),
                    loaded_at=st.loaded_at,
                    last_reload_ok=st.ok,
                    last_reload_at=st.at,
                    last_reload_error=st.error or "",
                    reload_failures=st.failures,
                    kill_switch=_kill(covering[0]) if covering else None,
                    health=HEALTH[target.serving(name)],
                )
            )
        return apb.GetStatusResponse(
            tenants=tenants,
            kill_switches=[_kill(k) for k in kills],
            health=HEALTH[target.serving(None)],
            server_version=__version__,
        )

    def SetKillSwitch(
        self, request: apb.SetKillSwitchRequest, context: grpc.ServicerContext
    ) -> apb.KillSwitchResponse:
        scope = _scope(request)
        reason = check_reason("reason", request.reason)
        return _kills(self._target.kill_switch.set(scope, reason, CALLER.get()))

    def ClearKillSwitch(
        self, request: apb.ClearKillSwitchRequest, context: grpc.ServicerContext
    ) -> apb.KillSwitchResponse:
        scope = _scope(request)
        check_reason("reason", request.reason)  # required for the audit log, which has it
        return _kills(self._target.kill_switch.clear(scope))

    def GetKillSwitch(
        self, request: apb.GetKillSwitchRequest, context: grpc.ServicerContext
    ) -> apb.KillSwitchResponse:
        return _kills(self._target.kill_switch.active())


def _scope(request: apb.SetKillSwitchRequest | apb.ClearKillSwitchRequest) -> Scope:
    s = request.scope
    action = EntityRef(s.action.type, s.action.id) if s.HasField("action") else None
    return Scope.of("scope", s.tenant, action)


def _version(v: BundleVersion | None) -> pb.PolicyVersion | None:
    return (
        None if v is None else pb.PolicyVersion(bundle=v.name, version=v.version, digest=v.digest)
    )


def _reload(tenant: str, st: TenantStatus | None) -> apb.TenantReload:
    if st is None:
        return apb.TenantReload(tenant=tenant, ok=False, error="no bundle source")
    return apb.TenantReload(
        tenant=tenant, ok=st.ok, policy_version=_version(st.version), error=st.error or ""
    )


def _kill(k: Kill) -> apb.KillSwitch:
    a = k.scope.action
    return apb.KillSwitch(
        scope=apb.KillSwitchScope(
            tenant=k.scope.tenant, action=vpb.EntityUid(type=a.type, id=a.id) if a else None
        ),
        reason=k.reason,
        source=k.source,
        set_at=k.set_at,
        set_by=k.set_by,
    )


def _kills(kills: list[Kill]) -> apb.KillSwitchResponse:
    return apb.KillSwitchResponse(kill_switches=[_kill(k) for k in kills])
