"""Several hub processes on one PostgreSQL (docs/scaling.md): the work that must run once, under
a lease (``lease.py``, ``singletons.py``), and committed data passed to the other processes'
live clients and presence (``feed.py``). The database coordinates; nothing here elects."""
