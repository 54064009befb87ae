"""One read from a cloud's metadata service, shared by the GCE and AWS providers."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPResponse

from dranet.providers.model import ProviderError


def read(
    req: urllib.request.Request,
    where: str,
    timeout: float,
    check: Callable[[HTTPResponse], None] | None = None,
) -> str | None:
    """The body as text; None for 404 (an attribute this machine does not have).

    `where` names the service and path in errors; `check` may refuse an answer by raising
    ProviderError (GCE: an answer without its Metadata-Flavor header is not the metadata server).
    """
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            if check is not None:
                check(resp)
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise ProviderError(f"{where}: HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise ProviderError(f"{where}: {exc}") from None
