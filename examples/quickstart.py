"""The smallest complete asyncflow program: run it with ``python examples/quickstart.py``.

With no configuration it starts an embedded Postgres in ``./.asyncflow`` (set
``ASYNCFLOW_DATABASE_URL`` to use your own). The workflow has a fixed id, so running the program
again finds it: press Ctrl-C (or kill the process) while it waits, run it again, and the workflow
resumes from its checkpoints -- its step does not run a second time. Once it has finished, a run
prints its recorded result. Edit the workflow before running it again and the new code adopts
the waiting run if its history replays against the edit; if not, the run says so and waits for
the code that started it (docs/deploying.md).
"""

import asyncio
import sys

import asyncflow

WORKFLOW_ID = "quickstart-greet-world"
app = asyncflow.AsyncFlow()


@app.step()
async def make_greeting(name: str) -> str:
    print("step: making the greeting (runs once per workflow)", flush=True)
    return f"Hello, {name}!"


@app.workflow()
async def greet(name: str) -> str:
    greeting = await make_greeting(name)  # a step: runs once, its result is checkpointed
    await asyncflow.set_event("greeting", greeting)  # an event others can read
    await asyncflow.write_stream("log", "waiting 2 seconds: press Ctrl-C now and run me again")
    await asyncflow.sleep(2)  # a durable sleep: after a restart only the rest is slept
    await asyncflow.write_stream("log", "waiting for a reply")  # a stream others can follow
    reply = await asyncflow.recv("reply", timeout_seconds=60)  # a message, waited for durably
    await asyncflow.write_stream("log", f"got {reply!r}")
    await asyncflow.close_stream("log")
    return f"{greeting} They said: {reply}"


async def main() -> None:
    async with app:
        try:
            before = (await app.get_workflow_status(WORKFLOW_ID)).status
        except asyncflow.WorkflowNotFoundError:
            before = None
        # Starting an id that exists returns that workflow: it never runs twice.
        handle = await app.start_workflow(greet, "world", workflow_id=WORKFLOW_ID)
        if before is None:
            print(f"started workflow {WORKFLOW_ID}")
        elif before == asyncflow.PENDING:
            version = (await handle.get_status()).app_version
            if version != app.app_version:  # not adopted: see the warning logged at launch
                print(f"workflow {WORKFLOW_ID} waits for the code that started it (version "
                      f"{version}); this edit does not replay its history")
                return
            print(f"resumed workflow {WORKFLOW_ID} from its checkpoints")
        else:
            print(f"workflow {WORKFLOW_ID} already ended ({before}): its recorded outcome")
        print("event:", await app.get_event(WORKFLOW_ID, "greeting"), flush=True)
        async for line in app.read_stream(WORKFLOW_ID, "log"):
            print("stream:", line, flush=True)
            if line == "waiting for a reply":  # (sent once whatever the runs: a key)
                await app.send(WORKFLOW_ID, "hi there", "reply", idempotency_key="reply-1")
        print("result:", await handle.get_result())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print(f"interrupted: workflow {WORKFLOW_ID} is saved; run again to resume it",
              file=sys.stderr)
        raise SystemExit(130) from None
