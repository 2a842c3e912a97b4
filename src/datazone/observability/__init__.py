"""What an operator sees of a running zone: metrics, probes, structured logs with request ids,
and tracing. Every process (gateway replica, scheduler, worker) sets it up the same way."""
