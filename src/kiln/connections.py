"""Clients for the cluster-side stores, from the connection strings the settings hold."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis


def parse_redis(connection_string: str) -> dict[str, Any]:
    """Feast's Redis form, ``host:port[,db=N][,username=U][,password=P][,ssl=true]``, as redis-py arguments."""
    host_port, *options = [part.strip() for part in connection_string.split(",")]
    host, _, port = host_port.partition(":")
    kwargs: dict[str, Any] = {"host": host or "127.0.0.1", "port": int(port or 6379)}
    for option in options:
        name, _, value = option.partition("=")
        if name == "db":
            kwargs["db"] = int(value)
        elif name in ("username", "password"):
            kwargs[name] = value
        elif name == "ssl":
            kwargs["ssl"] = value.lower() == "true"
    return kwargs


def redis_client(connection_string: str, timeout: float = 3.0) -> "redis.Redis":
    import redis

    return redis.Redis(**parse_redis(connection_string), socket_connect_timeout=timeout, socket_timeout=timeout)
