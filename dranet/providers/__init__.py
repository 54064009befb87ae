"""Providers, as upstream's cloudprovider: who adds device attributes (a cloud's metadata service,
or a webhook) and who resolves a claim's ``profile`` into configuration (a webhook, e.g. IPAM)."""

from dranet.providers.model import CloudInstance, DeviceIdentifiers, ProfileProvider, ProviderError

__all__ = ["CloudInstance", "DeviceIdentifiers", "ProfileProvider", "ProviderError"]
