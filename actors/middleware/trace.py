from dramatiq.middleware import Middleware

from core import trace


class TraceContext(Middleware):
    """Carries the trace id in message options and restores it around the actor call."""

    def before_enqueue(self, broker, message, delay):
        message.options.setdefault("trace_id", trace.trace_id() or trace.new_trace_id())

    def before_process_message(self, broker, message):
        trace.set_context(
            trace_id=message.options.get("trace_id"),
            actor=message.actor_name,
            message_id=message.message_id,
            queue=message.queue_name,
            attempt=message.options.get("retries", 0) + 1,
        )

    def after_process_message(self, broker, message, *, result=None, exception=None):
        trace.set_context()

    after_skip_message = after_process_message
