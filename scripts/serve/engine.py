"""An IR on OpenVINO's AsyncInferQueue, awaited from asyncio.

The queue has the device's optimal number of requests (PERFORMANCE_HINT THROUGHPUT, as the
benchmark stage's throughput mode). A semaphore of that size admits work, so ``start_async``
finds an idle request and never blocks the event loop; each finished request hands its
output back to the loop with ``call_soon_threadsafe``. ``close`` waits for every request
before the queue is freed (a callback still waiting for the GIL while the queue is freed
would deadlock).
"""
import asyncio

import numpy as np

from scripts.core.inference import compile_ir


class AsyncIr:
    """One compiled IR: ``await infer(array)`` -> its first output, one image per request."""

    def __init__(self, ir_xml, device="CPU", threads=None):
        import openvino as ov
        core = ov.Core()
        self.model = core.read_model(ir_xml)
        self.compiled = compile_ir(core, self.model, device, "THROUGHPUT", threads)
        self.queue = ov.AsyncInferQueue(self.compiled)  # 0 jobs: the device's optimal number
        self.queue.set_callback(self._finished)
        self.requests = len(self.queue)
        self._admitted = None
        self.input = self.compiled.input(0)
        self.output = self.compiled.output(0)

    @staticmethod
    def _finished(request, userdata):
        loop, future = userdata
        try:
            value = request.get_output_tensor(0).data.copy()
        except Exception as error:  # handed to the awaiting coroutine
            value = error
        loop.call_soon_threadsafe(_resolve, future, value)

    async def infer(self, array):
        """The output [1, ...] of one input [1, ...] (already validated against the input)."""
        if self._admitted is None:
            self._admitted = asyncio.Semaphore(self.requests)
        async with self._admitted:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self.queue.start_async({0: np.ascontiguousarray(array)}, (loop, future))
            return await future

    async def infer_batch(self, batch):
        """Outputs [N, ...] of inputs [N, ...]: the images go over the requests at once."""
        if len(batch) == 1:  # the common case, without a task per image
            return await self.infer(batch)
        outputs = await asyncio.gather(*(self.infer(batch[index:index + 1]) for index in range(len(batch))))
        return np.concatenate(outputs)

    def close(self):
        self.queue.wait_all()


def _resolve(future, value):
    if future.cancelled():
        return
    if isinstance(value, Exception):
        future.set_exception(value)
    else:
        future.set_result(value)
