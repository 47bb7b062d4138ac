"""routes.yaml: schema, loader with line numbers, and the matcher that turns a submission into targets."""

from gateway.routing.loader import RouteError, RoutesFileError, load_routes, parse_routes
from gateway.routing.matcher import RoutingDecision, Target, decide
from gateway.routing.schema import Reject, Route, RouteTable, Send, When

__all__ = [
    "Reject",
    "Route",
    "RouteError",
    "RouteTable",
    "RoutesFileError",
    "RoutingDecision",
    "Send",
    "Target",
    "When",
    "decide",
    "load_routes",
    "parse_routes",
]
