"""Application services: the use cases the web layer, the CLI and the jobs call.

They sit above the sync engine and the connections service and put them
together with the store and the provider adapters (``calendar_sync``).
"""
