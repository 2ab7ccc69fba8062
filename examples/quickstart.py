"""The smallest complete asyncflow program: run it with ``python examples/quickstart.py``.

With no configuration it starts an embedded Postgres in ``./.asyncflow`` (set
``ASYNCFLOW_DATABASE_URL`` to use your own). The workflow's steps are checkpointed: kill the
program while it waits and run it again, and the workflow continues where it stopped.
"""

import asyncio
import uuid

import asyncflow

app = asyncflow.AsyncFlow()


@app.step()
async def make_greeting(name: str) -> str:
    return f"Hello, {name}!"


@app.workflow()
async def greet(name: str) -> str:
    greeting = await make_greeting(name)  # a step: runs once, its result is checkpointed
    await asyncflow.set_event("greeting", greeting)  # an event others can read
    await asyncflow.write_stream("log", "waiting for a reply")  # a stream others can follow
    reply = await asyncflow.recv("reply", timeout_seconds=60)  # a message, waited for durably
    await asyncflow.write_stream("log", f"got {reply!r}")
    await asyncflow.close_stream("log")
    return f"{greeting} They said: {reply}"


async def main() -> None:
    async with app:
        handle = await app.start_workflow(greet, "world", workflow_id=f"greet-{uuid.uuid4()}")
        print("event:", await app.get_event(handle.workflow_id, "greeting"))
        await app.send(handle.workflow_id, "hi there", "reply")
        async for line in app.read_stream(handle.workflow_id, "log"):
            print("stream:", line)
        print("result:", await handle.get_result())


if __name__ == "__main__":
    asyncio.run(main())
