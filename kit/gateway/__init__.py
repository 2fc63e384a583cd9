"""kit's simulated IB Gateway: speaks the TWS socket protocol (server versions 157 to 178) to the real
ib_async, ib_insync and IB's own ibapi clients over loopback, so kit's IB path is tested without TWS or IB
Gateway. See docs/gateway.md.
"""

from kit.gateway.config import GatewayConfig
from kit.gateway.faults import Faults
from kit.gateway.instruments import DEFAULT_INSTRUMENTS, Instrument
from kit.gateway.server import Gateway, GatewayThread, run_gateway_in_thread

__all__ = [
    "DEFAULT_INSTRUMENTS",
    "Faults",
    "Gateway",
    "GatewayConfig",
    "GatewayThread",
    "Instrument",
    "run_gateway_in_thread",
]
