"""An unmodified RunPod serverless handler (runpod-python), as it runs on RunPod and under Spool.

It echoes its input, reports progress, and streams words when asked to. See README.md beside this
file for the exact environment that points it at a local Spool server.
"""
import asyncio

import runpod


async def handler(job):
    job_input = job["input"]
    mode = job_input.get("mode", "echo") if isinstance(job_input, dict) else "echo"

    if mode == "words":
        # A generator handler: each yield is a chunk on /stream (job-stream posts).
        async def words():
            for word in str(job_input.get("text", "hello from spool")).split():
                await asyncio.sleep(0.2)
                yield word
        return words()

    if mode == "fail":
        return {"error": job_input.get("message", "this job fails on purpose")}

    runpod.serverless.progress_update(job, {"step": 1, "of": 2})
    await asyncio.sleep(0.5)
    return {"echo": job_input, "job_id": job["id"]}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
