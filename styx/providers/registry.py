"""Providers by name: the worker registers one instance per provider, and the provider
activities look each request's provider up here (``registry.lookup(inp.provider)``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from styx.providers.base import InvalidProviderRequest, Provider

__all__ = ["ProviderRegistry", "UnknownProvider"]


class UnknownProvider(InvalidProviderRequest):
    """No provider of that name is registered on this worker."""


class ProviderRegistry(Mapping[str, Provider]):
    """Name -> provider, in registration order (``styx check`` lists them in that order).

    >>> registry = ProviderRegistry({"local": local, "aws": aws})  # doctest: +SKIP
    >>> await registry.lookup("aws").terminate("train", "us-east-1")  # doctest: +SKIP
    """

    def __init__(self, providers: Mapping[str, Provider] | None = None) -> None:
        self._providers: dict[str, Provider] = dict(providers or {})

    def register(self, name: str, provider: Provider) -> None:
        self._providers[name] = provider

    def lookup(self, name: str) -> Provider:
        """The provider called ``name``; ``UnknownProvider`` if this worker has none."""
        try:
            return self._providers[name]
        except KeyError:
            known = ", ".join(self._providers) or "none"
            raise UnknownProvider(f"provider {name!r} is not configured on this worker (configured: {known})") \
                from None

    def __getitem__(self, name: str) -> Provider:
        return self._providers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)
