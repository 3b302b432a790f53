"""The admin dashboard: a static browser UI at /ui (`static/`) and the admin endpoints it reads.

`plugin.Dashboard` is built in (loaded whenever `governance` is configured); `api` holds the
endpoints' figures: the overview from the ledger, the routing view, the live architecture
diagram, a request's attempts. The UI calls nothing but the admin API, with the master key.
"""
