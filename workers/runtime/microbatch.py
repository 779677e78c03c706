"""Where ``engine_thread`` used to live: ``workers.runtime.continuous`` has it now, with the
continuous batcher that replaced the micro-batcher. Kept only while ``workers/app.py`` still
imports it from here; remove once that import moves."""

from workers.runtime.continuous import engine_thread

__all__ = ["engine_thread"]
