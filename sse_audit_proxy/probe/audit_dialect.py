"""Which dialect the probe's StreamAudit uses: the proxy's own for the route.

(The probe carried a small Responses dialect of its own until the registry had one.)
"""

from __future__ import annotations

from ..dialects import Dialect, dialect_for_route, route_for_path


def dialect_for(path: str) -> type[Dialect]:
    return dialect_for_route(route_for_path(path))
