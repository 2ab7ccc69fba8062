"""An ASGI lifespan that runs asyncflow apps and clients while the web server runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from .._errors import ConfigurationError
from .._front.lifecycle import Connected as Core


def lifespan(
    *sources: Core,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for Starlette/FastAPI that runs apps and clients while the server runs.

    ``FastAPI(lifespan=asyncflow.lifespan(app))``: the app is launched (schema migrated,
    listener and recovery started) before the server accepts requests and shut down after the
    last request. Several apps/clients are launched in order and shut down in reverse order.
    With a lifespan of your own, use ``async with app:`` inside it instead.
    """
    if not sources:
        raise ConfigurationError("asyncflow.lifespan() needs at least one AsyncFlow or Client")
    for source in sources:
        if not isinstance(source, Core):
            raise ConfigurationError(
                f"asyncflow.lifespan() takes AsyncFlow apps and Clients, not {source!r}"
            )

    @asynccontextmanager
    async def run(_asgi_app: Any) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for source in sources:
                await stack.enter_async_context(source)
            yield

    return run
